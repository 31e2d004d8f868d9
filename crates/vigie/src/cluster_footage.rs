//! One MP4 across nodes (issue 15 item 3, docs/CLUSTER.md "One MP4 across nodes"): the
//! [`Footage`] of a clustered node. `video.mp4` of a range whose footage is held by several
//! nodes (a failover in the middle) is laid out here as one [`VirtualMp4`], and its sample data
//! read from the nodes holding it.
//!
//! * Who holds what: this node's spans (its store) and the others' (`Info::remote_spans`, the
//!   signed `/internal/v1/…/spans`). When nobody else holds footage of the range, the request
//!   is the local one ([`LocalFootage`]): same bytes and ETag as a single node.
//! * One copy per instant ([`choose`]): stay with a holder while its span lasts; switch to
//!   another holder at the start of its span (a span begins on a key frame) when that span
//!   goes on past the current one; here first on ties.
//! * Each chosen stretch is planned by its holder (`store.playback_plan` here, `/plan` there:
//!   summaries only) and the plans are laid end to end ([`combine`]): one edit list (the first
//!   stretch's start, the last one's end), one sample description per distinct set of codec
//!   parameters, the wall-clock map shifted.
//! * Tables of a remote piece are asked when its share of the `moov` is rendered
//!   (`/segments/{id}/tables`, a few kept); `mdat` parts are read with `/segments/{id}` and
//!   `Range` (one streamed request per piece's run of chunks, bounded by the range asked; the
//!   next piece's opened while one is read; each body pumped by a task into a queue of at most
//!   [`PREFETCH_BYTES`], its chunks handed on as received, not copied), local files directly. The signed requests carry the user ([`PlaybackRequest::on_behalf`]): each node
//!   journals what it served.
//! * ETag: hash of the request and, per stretch, its node, bounds and every segment's id,
//!   indexed length and samples.
//! * A holder that cannot be asked, with footage nobody else holds in the range: `gaps=error`
//!   → 409 with the reachable spans (as for a gap); `gaps=skip` → that part is a gap.
//!
//! Does not own: the routes (vigie-api), the layout (vigie-mp4), the index (vigie-store).

use std::collections::{HashMap, VecDeque};
use std::path::PathBuf;
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::Duration;

use base64::Engine;
use bytes::Bytes;
use sha2::Digest;
use vigie_api::internal::{CarriedIdentity, ClusterKey};
use vigie_api::{ClusterInfo, NodeFootage};
use vigie_core::{StreamKey, Time90k};
use vigie_footage::{FootageError, PlaybackRequest, Prepared, READ_CHUNK_BYTES};
use vigie_mp4::SampleInfo;
use vigie_mp4::progressive::{
    self, ChunkLoc, LazyInput, PieceRef, PieceSource, PieceSummary, PieceTables, Slice, VirtualMp4,
};
use vigie_service::{Footage, LocalFootage};
use vigie_store::{GapPolicy, IndexPieces, Piece, PlaybackError, SegmentInfo, Span, StoreError};

use crate::cluster::Info;

/// Bound on connecting to a node and on each wait for its next bytes (a stream of a segment
/// has no total bound: it lasts as long as the client reads).
const NODE_TIMEOUT: Duration = Duration::from_secs(10);

/// Remote pieces' tables kept per file (a `moov` read in several requests renders each piece
/// once per request; the last ones are kept).
const TABLES_KEPT: usize = 64;

/// Built files kept (players issue many range requests for one file), per user.
const FILES_KEPT: usize = 8;

/// Bytes asked beyond what the read still needs, in one request for a run of chunks (the
/// `moof` headers between chunks are skipped; a run longer than asked opens another request).
const REQUEST_SLACK_BYTES: u64 = 256 * 1024;

/// The footage of a clustered node: its own store, and the other nodes' through `Info`.
pub struct ClusterFootage {
    local: LocalFootage,
    info: Arc<Info>,
    key: Option<ClusterKey>,
    http: reqwest::Client,
    rt: tokio::runtime::Handle,
    files: Mutex<VecDeque<(String, Arc<VirtualMp4>)>>,
}

impl ClusterFootage {
    pub fn new(
        store: vigie_store::Store,
        info: Arc<Info>,
        key: Option<ClusterKey>,
        ca_pem: Option<&[u8]>,
    ) -> anyhow::Result<ClusterFootage> {
        let mut b = reqwest::Client::builder()
            .connect_timeout(NODE_TIMEOUT)
            .read_timeout(NODE_TIMEOUT);
        if let Some(pem) = ca_pem {
            b = b.add_root_certificate(reqwest::Certificate::from_pem(pem)?);
        }
        Ok(ClusterFootage {
            local: LocalFootage(store),
            info,
            key,
            http: b.build()?,
            rt: tokio::runtime::Handle::current(),
            files: Mutex::new(VecDeque::new()),
        })
    }

    fn conn(&self, who: CarriedIdentity) -> Option<Arc<Conn>> {
        Some(Arc::new(Conn {
            key: self.key.clone()?,
            http: self.http.clone(),
            rt: self.rt.clone(),
            who,
        }))
    }
}

/// How a file reaches the other nodes: signed requests on behalf of one user.
struct Conn {
    key: ClusterKey,
    http: reqwest::Client,
    rt: tokio::runtime::Handle,
    who: CarriedIdentity,
}

impl Conn {
    /// Signed GET; the response if 2xx.
    async fn get_async(
        &self,
        url: &str,
        path_and_query: &str,
        range: Option<(u64, u64)>,
    ) -> Result<reqwest::Response, String> {
        let mut req = self
            .http
            .get(format!("{}{path_and_query}", url.trim_end_matches('/')));
        let now_s = jiff::Timestamp::now().as_second();
        for (k, v) in self.key.sign("GET", url, path_and_query, &self.who, now_s) {
            req = req.header(k, v);
        }
        if let Some((a, b)) = range {
            req = req.header("range", format!("bytes={a}-{}", b.saturating_sub(1)));
        }
        let resp = req.send().await.map_err(|e| e.without_url().to_string())?;
        let status = resp.status();
        if !status.is_success() {
            let body = resp.bytes().await.unwrap_or_default();
            return Err(format!(
                "answered {status}: {}",
                String::from_utf8_lossy(&body[..body.len().min(300)])
            ));
        }
        Ok(resp)
    }

    async fn get_json_async(
        &self,
        url: &str,
        path_and_query: &str,
    ) -> Result<serde_json::Value, String> {
        let resp = self.get_async(url, path_and_query, None).await?;
        let body = resp
            .bytes()
            .await
            .map_err(|e| e.without_url().to_string())?;
        serde_json::from_slice(&body).map_err(|e| format!("answer is not JSON: {e}"))
    }
}

/// A node holding footage of the range (`url` None: this node).
#[derive(Clone, Debug)]
struct Holder {
    node: String,
    url: Option<String>,
    spans: Vec<Span>,
}

/// One copy per instant: `(holder, start, end)` stretches in order, covering every instant
/// some holder covers in `[start, end)`. Holders earlier in the list win ties.
fn choose(holders: &[Vec<Span>], start: Time90k, end: Time90k) -> Vec<(usize, Time90k, Time90k)> {
    let mut out = Vec::new();
    let mut t = start;
    let mut cur: Option<(usize, Time90k)> = None;
    while t < end {
        let (h, e) = match cur {
            Some(c) => c,
            None => {
                // The holder covering `t` the longest; none: the next span's start.
                let mut best: Option<(usize, Time90k)> = None;
                let mut next: Option<Time90k> = None;
                for (i, spans) in holders.iter().enumerate() {
                    for s in spans {
                        if s.start <= t && t < s.end {
                            if best.is_none_or(|(_, e)| s.end > e) {
                                best = Some((i, s.end));
                            }
                        } else if s.start > t && next.is_none_or(|n| s.start < n) {
                            next = Some(s.start);
                        }
                    }
                }
                match (best, next) {
                    (Some(b), _) => b,
                    (None, Some(n)) => {
                        t = n;
                        continue;
                    }
                    (None, None) => break,
                }
            }
        };
        // Another holder's span starting inside this one and going on past it: switch at its
        // start (a key frame), the one lasting longest.
        let mut switch: Option<(usize, Time90k, Time90k)> = None;
        for (i, spans) in holders.iter().enumerate() {
            if i == h {
                continue;
            }
            for s in spans {
                if s.start > t && s.start <= e && s.end > e && switch.is_none_or(|w| s.end > w.2) {
                    switch = Some((i, s.start, s.end));
                }
            }
        }
        let stop = switch.map_or(e, |w| w.1).min(end);
        if stop > t {
            out.push((h, t, stop));
        }
        t = stop;
        cur = switch.map(|(i, _, e)| (i, e));
    }
    out
}

/// Where a piece's sample data is.
#[derive(Clone, Debug)]
enum FileAt {
    Local(PathBuf),
    Remote {
        url: String,
        key: StreamKey,
        segment: u64,
        /// Indexed length of the segment file when planned.
        bytes: u64,
    },
}

/// Where a piece's tables come from.
#[derive(Clone, Debug)]
enum TablesAt {
    Local(Arc<IndexPieces>, u32),
    Remote {
        url: String,
        key: StreamKey,
        segment: u64,
        first: u32,
        samples: u32,
    },
}

/// One holder's plan of its stretch.
struct SubPlan {
    node: String,
    start: Time90k,
    end: Time90k,
    sample_entries: Vec<Bytes>,
    width: u16,
    height: u16,
    skip_90k: u64,
    duration_90k: u64,
    wall: Vec<Piece>,
    /// (description in `sample_entries`, summary, data, tables, ETag words)
    pieces: Vec<(u32, PieceSummary, FileAt, TablesAt, [u64; 4])>,
    /// RFC 6381 codec string of each sample entry, when the holder gave them (`/plan`'s
    /// `codecs`; empty for this node's stretches: exports look them up in the store).
    codecs: Vec<String>,
}

fn sub_local(
    store: &vigie_store::Store,
    node: &str,
    key: &StreamKey,
    a: Time90k,
    b: Time90k,
) -> Result<Option<SubPlan>, FootageError> {
    let plan = match store.playback_plan(key, a, b, GapPolicy::Skip) {
        Ok(p) => p,
        Err(PlaybackError::NoRecording) => return Ok(None),
        Err(PlaybackError::Store(e)) => return Err(FootageError::Store(e)),
        Err(e) => {
            return Err(FootageError::Conflict {
                message: e.to_string(),
                spans: Vec::new(),
            });
        }
    };
    let i = &plan.input;
    let pieces = i
        .pieces
        .iter()
        .zip(&plan.segments)
        .enumerate()
        .map(|(n, (p, s))| {
            let path = i.files.get(p.file as usize).cloned().unwrap_or_default();
            (
                p.description,
                p.summary,
                FileAt::Local(path),
                TablesAt::Local(plan.source.clone(), n as u32),
                [
                    s.id,
                    s.bytes,
                    u64::from(s.first_sample),
                    u64::from(s.samples),
                ],
            )
        })
        .collect();
    Ok(Some(SubPlan {
        node: node.to_owned(),
        start: a,
        end: b,
        sample_entries: i.sample_entries.clone(),
        width: i.width,
        height: i.height,
        skip_90k: i.skip_90k,
        duration_90k: i.duration_90k,
        wall: plan.pieces.clone(),
        pieces,
        codecs: Vec::new(),
    }))
}

fn plan_path(key: &StreamKey, a: Time90k, b: Time90k) -> String {
    format!(
        "/internal/v1/cameras/{}/streams/{}/plan?start_90k={}&end_90k={}",
        key.camera, key.stream, a.0, b.0
    )
}

/// A holder's `/plan` answer for `[a, b)`.
fn sub_remote(
    v: serde_json::Value,
    node: &str,
    url: &str,
    key: &StreamKey,
    a: Time90k,
    b: Time90k,
) -> Result<Option<SubPlan>, String> {
    let bad = |what: &str| format!("plan of {node}: {what}");
    let pieces_v = v["pieces"].as_array().ok_or_else(|| bad("no pieces"))?;
    if pieces_v.is_empty() {
        return Ok(None);
    }
    let b64 = base64::engine::general_purpose::STANDARD;
    let sample_entries = v["sample_entries"]
        .as_array()
        .ok_or_else(|| bad("no sample entries"))?
        .iter()
        .map(|e| {
            e.as_str()
                .and_then(|s| b64.decode(s).ok())
                .map(Bytes::from)
                .ok_or_else(|| bad("sample entry"))
        })
        .collect::<Result<Vec<_>, _>>()?;
    let u = |v: &serde_json::Value| v.as_u64().ok_or_else(|| bad("number"));
    let mut pieces = Vec::with_capacity(pieces_v.len());
    for p in pieces_v {
        let s = p["summary"].as_array().ok_or_else(|| bad("summary"))?;
        let n = |i: usize| {
            s.get(i)
                .and_then(|x| x.as_u64())
                .ok_or_else(|| bad("summary"))
        };
        let c32 = |i: usize| n(i).and_then(|x| u32::try_from(x).map_err(|_| bad("summary")));
        let summary = PieceSummary {
            samples: c32(0)?,
            key_frames: c32(1)?,
            stts_runs: c32(2)?,
            chunks: c32(3)?,
            stsc_runs: c32(4)?,
            payload_bytes: n(5)?,
            media_90k: n(6)?,
        };
        let segment = u(&p["segment"])?;
        let bytes = u(&p["bytes"])?;
        let first = u32::try_from(u(&p["first_sample"])?).map_err(|_| bad("first_sample"))?;
        let description = u32::try_from(u(&p["description"])?).map_err(|_| bad("description"))?;
        if description as usize >= sample_entries.len() {
            return Err(bad("description out of range"));
        }
        pieces.push((
            description,
            summary,
            FileAt::Remote {
                url: url.to_owned(),
                key: key.clone(),
                segment,
                bytes,
            },
            TablesAt::Remote {
                url: url.to_owned(),
                key: key.clone(),
                segment,
                first,
                samples: summary.samples,
            },
            [segment, bytes, u64::from(first), u64::from(summary.samples)],
        ));
    }
    let wall = v["wall"]
        .as_array()
        .ok_or_else(|| bad("wall"))?
        .iter()
        .map(|w| {
            Ok(Piece {
                presentation_90k: u(&w["presentation_90k"])?,
                wall_start: Time90k(w["wall_start_90k"].as_i64().ok_or_else(|| bad("wall"))?),
                duration_90k: u(&w["duration_90k"])?,
            })
        })
        .collect::<Result<Vec<_>, String>>()?;
    Ok(Some(SubPlan {
        node: node.to_owned(),
        start: a,
        end: b,
        sample_entries,
        width: u16::try_from(u(&v["width"])?).unwrap_or(0),
        height: u16::try_from(u(&v["height"])?).unwrap_or(0),
        skip_90k: u(&v["skip_90k"])?,
        duration_90k: u(&v["duration_90k"])?,
        wall,
        pieces,
        codecs: v["codecs"]
            .as_array()
            .map(|c| {
                c.iter()
                    .filter_map(|x| x.as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default(),
    }))
}

/// The family of a sample entry (`avc1`/`avc3` → H.264, `hvc1`/`hev1` → H.265).
fn codec_of(entry: &[u8]) -> &'static str {
    match entry.get(4..8) {
        Some(b"hvc1") | Some(b"hev1") => "h265",
        _ => "h264",
    }
}

/// Lays the stretches end to end: the builder's input, the pieces' data and tables, and the
/// presentation → wall-clock map.
fn combine(subs: &[SubPlan]) -> (LazyInput, Vec<FileAt>, Vec<TablesAt>, Vec<Piece>) {
    let mut input = LazyInput::default();
    let mut files = Vec::new();
    let mut tables = Vec::new();
    let mut wall = Vec::new();
    let (mut media_before, mut last_clip) = (0u64, 0u64);
    let skip0 = subs.first().map_or(0, |s| s.skip_90k);
    for (n, sp) in subs.iter().enumerate() {
        if n == 0 {
            input.skip_90k = sp.skip_90k;
            input.width = sp.width;
            input.height = sp.height;
        }
        let descs: Vec<u32> = sp
            .sample_entries
            .iter()
            .map(|e| match input.sample_entries.iter().position(|x| x == e) {
                Some(i) => i as u32,
                None => {
                    input.sample_entries.push(e.clone());
                    (input.sample_entries.len() - 1) as u32
                }
            })
            .collect();
        // This stretch's presentation time p is media time media_before + skip + p of the
        // whole file, presented at that minus the first stretch's skip.
        let base = (media_before + sp.skip_90k).saturating_sub(skip0);
        wall.extend(sp.wall.iter().map(|w| Piece {
            presentation_90k: w.presentation_90k + base,
            ..*w
        }));
        let mut media = 0u64;
        for (d, summary, f, t, _) in &sp.pieces {
            input.pieces.push(PieceRef {
                file: files.len() as u32,
                description: descs.get(*d as usize).copied().unwrap_or(0),
                summary: *summary,
            });
            files.push(f.clone());
            tables.push(t.clone());
            media += summary.media_90k;
        }
        media_before += media;
        last_clip = media
            .saturating_sub(sp.skip_90k)
            .saturating_sub(sp.duration_90k);
    }
    input.duration_90k = media_before.saturating_sub(skip0).saturating_sub(last_clip);
    (input, files, tables, wall)
}

/// What a built file needs to read its remote parts.
struct FileCtx {
    conn: Arc<Conn>,
    files: Vec<FileAt>,
    /// The file's tables (to open the next piece's request ahead).
    pieces: OnceLock<Weak<ClusterPieces>>,
}

/// Marks remote files in [`VirtualMp4::files`]: `\0vigie-node/<ctx>/<file>` (no real path holds
/// a NUL byte), resolved through this registry while the file lives.
fn registry() -> &'static Mutex<HashMap<u64, Weak<FileCtx>>> {
    static R: OnceLock<Mutex<HashMap<u64, Weak<FileCtx>>>> = OnceLock::new();
    R.get_or_init(|| Mutex::new(HashMap::new()))
}

const REMOTE_MARK: &str = "\0vigie-node/";

fn register(ctx: &Arc<FileCtx>) -> u64 {
    static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);
    let id = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if let Ok(mut r) = registry().lock() {
        r.retain(|_, w| w.strong_count() > 0);
        r.insert(id, Arc::downgrade(ctx));
    }
    id
}

fn ctx_of(mp4: &VirtualMp4) -> Option<Arc<FileCtx>> {
    let p = mp4
        .files
        .iter()
        .find_map(|p| p.to_str()?.strip_prefix(REMOTE_MARK))?;
    let id: u64 = p.split('/').next()?.parse().ok()?;
    registry().lock().ok()?.get(&id)?.upgrade()
}

/// The pieces' tables: the local store's, or asked from the holding node (the last ones kept).
struct ClusterPieces {
    ctx: Arc<FileCtx>,
    tables: Vec<TablesAt>,
    kept: Mutex<VecDeque<(u32, Arc<PieceTables>)>>,
}

impl std::fmt::Debug for ClusterPieces {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "ClusterPieces({} pieces)", self.tables.len())
    }
}

/// Remote pieces whose tables are asked at once (in parallel) when one is needed: rendering
/// the `moov` visits every piece in order, so the next ones are needed right after.
const TABLES_AHEAD: usize = 16;

fn parse_tables(v: &serde_json::Value) -> Option<PieceTables> {
    let num = |x: &serde_json::Value, i: usize| x.get(i).and_then(|n| n.as_u64());
    let n32 = |x: &serde_json::Value, i: usize| num(x, i).and_then(|n| u32::try_from(n).ok());
    let mut t = PieceTables::default();
    for s in v["samples"].as_array()? {
        t.samples.push(SampleInfo {
            duration_90k: n32(s, 0)?,
            bytes: n32(s, 1)?,
            is_key: num(s, 2)? != 0,
        });
    }
    for c in v["chunks"].as_array()? {
        t.chunks.push(ChunkLoc {
            offset: num(c, 0)?,
            samples: n32(c, 1)?,
        });
    }
    Some(t)
}

impl PieceSource for ClusterPieces {
    fn load(&self, piece: u32) -> std::io::Result<Arc<PieceTables>> {
        match self.tables.get(piece as usize) {
            None => return Err(std::io::Error::other(format!("no piece #{piece}"))),
            Some(TablesAt::Local(src, n)) => return src.load(*n),
            Some(TablesAt::Remote { .. }) => {}
        }
        let kept = |p: u32| -> Option<Arc<PieceTables>> {
            let k = self.kept.lock().ok()?;
            k.iter().find(|(q, _)| *q == p).map(|(_, t)| t.clone())
        };
        if let Some(t) = kept(piece) {
            return Ok(t);
        }
        // This piece and the next remote ones not kept yet, asked in parallel.
        let asks: Vec<(u32, String, String, u64)> = self
            .tables
            .iter()
            .enumerate()
            .skip(piece as usize)
            .filter_map(|(n, at)| match at {
                TablesAt::Remote {
                    url,
                    key,
                    segment,
                    first,
                    samples,
                } => Some((
                    n as u32,
                    url.clone(),
                    format!(
                        "/internal/v1/cameras/{}/streams/{}/segments/{segment}/tables?first={first}&samples={samples}",
                        key.camera, key.stream
                    ),
                    *segment,
                )),
                TablesAt::Local(..) => None,
            })
            .filter(|(n, ..)| *n == piece || kept(*n).is_none())
            .take(TABLES_AHEAD)
            .collect();
        let conn = &self.ctx.conn;
        let answers = conn.rt.block_on(futures::future::join_all(
            asks.iter()
                .map(|(_, url, pq, _)| conn.get_json_async(url, pq)),
        ));
        let mut wanted = None;
        for ((n, _, _, segment), v) in asks.iter().zip(answers) {
            let t = v
                .map_err(|e| format!("tables of segment {segment}: {e}"))
                .and_then(|v| {
                    parse_tables(&v)
                        .ok_or_else(|| format!("tables of segment {segment}: malformed answer"))
                });
            match t {
                Ok(t) => {
                    let t = Arc::new(t);
                    if *n == piece {
                        wanted = Some(t.clone());
                    }
                    if let Ok(mut k) = self.kept.lock() {
                        k.push_front((*n, t));
                        k.truncate(TABLES_KEPT);
                    }
                }
                Err(e) if *n == piece => return Err(std::io::Error::other(e)),
                Err(_) => {} // asked again when needed
            }
        }
        wanted.ok_or_else(|| std::io::Error::other(format!("tables of piece #{piece}")))
    }
}

/// Bytes of a remote segment's stream received ahead of the reader, per stream (the body is
/// pumped by a task while the reader hands out what it has). With [`AHEAD_STREAMS`] opened
/// ahead, a read holds at most (1 + AHEAD_STREAMS) × (this + one body chunk, ≤ ~400 KiB:
/// hyper's read buffer) of remote data (2.8 MiB), besides the route's own channel.
const PREFETCH_BYTES: u32 = 1024 * 1024;

/// Remote pieces' streams opened ahead of the one being read (the next request's round trip
/// hidden behind the reading of this one). 3 measured no faster on loopback than 1
/// (docs/BENCHMARKS.md) and holds twice the memory.
const AHEAD_STREAMS: usize = 1;

/// Body chunks of a stream queued for the reader (the byte budget above is the real bound;
/// this one only caps the count of small chunks).
const PREFETCH_CHUNKS: usize = 64;

type Received = Result<(Bytes, tokio::sync::OwnedSemaphorePermit), String>;

/// A `Range` request on a remote segment, its body pumped by a task into a bounded queue: its
/// bytes `[pos, end)` not taken yet. Dropping it ends the request.
struct Stream {
    file: u32,
    pos: u64,
    end: u64,
    rx: tokio::sync::mpsc::Receiver<Received>,
    buf: Bytes,
    /// The budget `buf` holds, given back when the next chunk is taken.
    _held: Option<tokio::sync::OwnedSemaphorePermit>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Stream {
    /// Sends the signed `Range` request for `[from, to)` of remote file `file` and pumps its
    /// body (in the background: this returns at once; errors come with the first bytes).
    fn open(ctx: &FileCtx, file: u32, from: u64, to: u64) -> Option<Stream> {
        let FileAt::Remote {
            url, key, segment, ..
        } = ctx.files.get(file as usize)?
        else {
            return None;
        };
        let (tx, rx) = tokio::sync::mpsc::channel::<Received>(PREFETCH_CHUNKS);
        let budget = Arc::new(tokio::sync::Semaphore::new(PREFETCH_BYTES as usize));
        let conn = ctx.conn.clone();
        let (url, pq, segment) = (url.clone(), segment_path(key, *segment), *segment);
        let task = ctx.conn.rt.spawn(async move {
            let mut resp = match conn.get_async(&url, &pq, Some((from, to))).await {
                Ok(r) => r,
                Err(e) => {
                    let _ = tx.send(Err(format!("segment {segment}: {e}"))).await;
                    return;
                }
            };
            loop {
                // Whole chunks as hyper hands them (no copy); the budget bounds what waits.
                let item = match resp.chunk().await {
                    Ok(Some(b)) => {
                        let n = u32::try_from(b.len())
                            .unwrap_or(u32::MAX)
                            .min(PREFETCH_BYTES);
                        let Ok(held) = budget.clone().acquire_many_owned(n).await else {
                            return;
                        };
                        Ok((b, held))
                    }
                    Ok(None) => return, // the reader sees the end (and whether it was early)
                    Err(e) => Err(format!("segment {segment}: {}", e.without_url())),
                };
                let failed = item.is_err();
                if tx.send(item).await.is_err() || failed {
                    return;
                }
            }
        });
        Some(Stream {
            file,
            pos: from,
            end: to,
            rx,
            buf: Bytes::new(),
            _held: None,
            task,
        })
    }

    /// Whether `[offset, offset + len)` of `file` is still ahead in this stream.
    fn covers(&self, file: u32, offset: u64, len: u64) -> bool {
        self.file == file && self.pos <= offset && offset + len <= self.end
    }

    /// The next `n ≤ buf + what comes` bytes at most, from the buffer or the stream (a slice of
    /// the received chunk, not a copy). Blocking: called off the executor.
    fn next(&mut self, n: u64) -> std::io::Result<Bytes> {
        if self.buf.is_empty() {
            self._held = None;
            match self.rx.blocking_recv() {
                Some(Ok((b, held))) => {
                    self.buf = b;
                    self._held = Some(held);
                }
                Some(Err(e)) => return Err(std::io::Error::other(e)),
                None => {
                    return Err(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "a node's segment stream ended early",
                    ));
                }
            }
        }
        let take = usize::try_from(n).unwrap_or(usize::MAX).min(self.buf.len());
        let out = self.buf.split_to(take);
        self.pos += take as u64;
        Ok(out)
    }
}

fn segment_path(key: &StreamKey, segment: u64) -> String {
    format!(
        "/internal/v1/cameras/{}/streams/{}/segments/{segment}",
        key.camera, key.stream
    )
}

/// Opens the stream of remote piece `file`'s sample data ahead (while the current one is
/// read): its whole run of chunks, at most `left` bytes (+ slack) of it.
fn open_ahead(ctx: &FileCtx, file: u32, left: u64) -> Option<Stream> {
    let FileAt::Remote { bytes, .. } = ctx.files.get(file as usize)? else {
        return None;
    };
    let t = ctx.pieces.get()?.upgrade()?.load(file).ok()?;
    let from = t.chunks.first()?.offset;
    let last = t.chunks.last()?;
    let last_bytes: u64 = t
        .samples
        .iter()
        .rev()
        .take(last.samples as usize)
        .map(|s| u64::from(s.bytes))
        .sum();
    let to = (last.offset + last_bytes)
        .min(from + left + REQUEST_SLACK_BYTES)
        .min(*bytes);
    if to <= from {
        return None;
    }
    Stream::open(ctx, file, from, to)
}

/// Reads `[start, end)` of a file with remote parts (see the module docs).
fn read_cluster(
    ctx: &FileCtx,
    mp4: &VirtualMp4,
    start: u64,
    end: u64,
    send: &mut dyn FnMut(Bytes) -> bool,
) -> std::io::Result<()> {
    use std::os::unix::fs::FileExt;
    let end = end.min(mp4.total_len);
    let mut left = end.saturating_sub(start);
    let mut local: Option<(u32, std::fs::File)> = None;
    let mut open: Option<Stream> = None;
    // The next remote piece's stream, opened while this one is read (saves a round trip per
    // segment, and its first bytes are there when needed).
    let mut ahead: VecDeque<Stream> = VecDeque::new();
    let mut err: Option<std::io::Error> = None;
    let mut slice = |s: Slice| -> std::io::Result<bool> {
        match s {
            Slice::Mem(m) => {
                left = left.saturating_sub(m.len() as u64);
                for i in (0..m.len()).step_by(READ_CHUNK_BYTES) {
                    if !send(m.slice(i..(i + READ_CHUNK_BYTES).min(m.len()))) {
                        return Ok(false);
                    }
                }
                Ok(true)
            }
            Slice::File { file, offset, len } => {
                left = left.saturating_sub(len);
                match ctx.files.get(file as usize) {
                    None => Err(std::io::Error::other(format!("no file #{file}"))),
                    Some(FileAt::Local(path)) => {
                        if local.as_ref().is_none_or(|(f, _)| *f != file) {
                            let f = std::fs::File::open(path).map_err(|e| {
                                std::io::Error::new(e.kind(), format!("{}: {e}", path.display()))
                            })?;
                            local = Some((file, f));
                        }
                        let Some((_, f)) = local.as_ref() else {
                            return Ok(false);
                        };
                        let mut done = 0u64;
                        while done < len {
                            let n = (len - done).min(READ_CHUNK_BYTES as u64) as usize;
                            let mut buf = vec![0u8; n];
                            f.read_exact_at(&mut buf, offset + done)?;
                            done += n as u64;
                            if !send(Bytes::from(buf)) {
                                return Ok(false);
                            }
                        }
                        Ok(true)
                    }
                    Some(FileAt::Remote { bytes, .. }) => {
                        if !open.as_ref().is_some_and(|o| o.covers(file, offset, len)) {
                            open = None; // ends a request not needed any more
                            // Streams opened ahead for earlier pieces are not needed.
                            while ahead.front().is_some_and(|s| s.file < file) {
                                ahead.pop_front();
                            }
                            let pre = match ahead.pop_front() {
                                Some(s) if s.covers(file, offset, len) => Some(s),
                                Some(s) if s.file != file => {
                                    ahead.push_front(s);
                                    None
                                }
                                _ => None,
                            };
                            open = match pre {
                                Some(s) => Some(s),
                                None => {
                                    // This run of chunks up to what the read still needs (+
                                    // the `moof` headers between them, roughly), within the
                                    // indexed length.
                                    let to = (offset + len + left + REQUEST_SLACK_BYTES)
                                        .min(*bytes)
                                        .max(offset + len);
                                    Stream::open(ctx, file, offset, to)
                                }
                            };
                            // The next remote pieces' streams, up to AHEAD_STREAMS, each
                            // bounded by what the read still needs after the ones before.
                            let mut rem = left.saturating_sub(
                                ahead.iter().map(|s| s.end.saturating_sub(s.pos)).sum(),
                            );
                            while rem > 0 && ahead.len() < AHEAD_STREAMS {
                                let next = ahead.back().map_or(file, |s| s.file) + 1;
                                let Some(s) = open_ahead(ctx, next, rem) else {
                                    break;
                                };
                                rem = rem.saturating_sub(s.end - s.pos);
                                ahead.push_back(s);
                            }
                        }
                        let Some(o) = open.as_mut() else {
                            return Err(std::io::Error::other(format!("no file #{file}")));
                        };
                        while o.pos < offset {
                            let skip = offset - o.pos;
                            o.next(skip)?;
                        }
                        // The received chunks as they are (at most 256 KiB each).
                        let mut done = 0u64;
                        while done < len {
                            let out = o.next((len - done).min(READ_CHUNK_BYTES as u64))?;
                            done += out.len() as u64;
                            if !out.is_empty() && !send(out) {
                                return Ok(false);
                            }
                        }
                        Ok(true)
                    }
                }
            }
        }
    };
    let r = mp4.for_each_slice(start, end, |s| match slice(s) {
        Ok(go_on) => go_on,
        Err(e) => {
            err = Some(e);
            false
        }
    });
    drop(ahead); // not needed (the read ended early, or a range ended inside it)
    r?;
    match err {
        Some(e) => Err(e),
        None => Ok(()),
    }
}

fn conflict(message: String, spans: Vec<Span>) -> FootageError {
    FootageError::Conflict { message, spans }
}

/// How a range is laid out ([`ClusterFootage::layout`]).
pub(crate) enum Layout {
    /// This node's footage alone: the single-node answer.
    Local,
    /// A file built before for the same request and user.
    Cached(Prepared),
    Laid(Box<Laid>),
}

/// A range laid out from several nodes' footage.
pub(crate) struct Laid {
    pub mp4: Arc<VirtualMp4>,
    pub etag: String,
    /// Recorded footage in the range, merged over the holders.
    pub spans: Vec<Span>,
    /// Each stretch and the node it is read from, in order.
    pub stretches: Vec<(String, Time90k, Time90k)>,
    /// Footage only unreachable nodes hold: (node, start, end, why).
    pub missing: Vec<(String, Time90k, Time90k, String)>,
    /// The builder's input and the pieces' tables (exports walk every sample).
    pub input: LazyInput,
    pub source: Arc<dyn progressive::PieceSource>,
    /// Some sample data is on another node.
    pub remote: bool,
    /// RFC 6381 codec strings, in order of appearance (exports only).
    pub codecs: Vec<String>,
}

/// What [`ClusterFootage::layout`] is asked beyond the request.
#[derive(Clone, Copy)]
pub(crate) struct LayoutOptions {
    /// Refuse (409) a range part of which only unreachable nodes hold.
    pub refuse_unavailable: bool,
    /// An export: no cache, codec strings wanted.
    pub export: bool,
}

impl ClusterFootage {
    fn prepare_cluster(&self, req: &PlaybackRequest) -> Result<Prepared, FootageError> {
        let opts = LayoutOptions {
            refuse_unavailable: req.gaps == GapPolicy::Refuse,
            export: false,
        };
        match self.layout(req, opts)? {
            Layout::Local => self.local.prepare(req),
            Layout::Cached(p) => Ok(p),
            Layout::Laid(l) => {
                let l = *l;
                Ok(Prepared {
                    mp4: l.mp4,
                    etag: l.etag,
                    spans: l.spans,
                })
            }
        }
    }

    /// This node's name.
    pub(crate) fn node(&self) -> &str {
        self.info.node()
    }

    /// Lays a range out over the nodes holding it (see the module docs).
    pub(crate) fn layout(
        &self,
        req: &PlaybackRequest,
        opts: LayoutOptions,
    ) -> Result<Layout, FootageError> {
        let Some(who) = req
            .on_behalf
            .as_deref()
            .and_then(|j| serde_json::from_str::<CarriedIdentity>(j).ok())
        else {
            // Nobody to ask on behalf of (internal callers): this node's footage.
            return Ok(Layout::Local);
        };
        let Some(conn) = self.conn(who.clone()) else {
            return Ok(Layout::Local);
        };
        let key = &req.key;
        let (start, end) = (req.start, req.end);
        let me = self.info.node().to_owned();
        let mine = self.local.spans(key, start, end)?;
        let view = self.info.member_urls();
        // The camera's recorder most likely holds the range: its plan of the whole window is
        // asked at once, beside the spans (saves a round trip when it is the whole answer).
        let guess = self
            .info
            .recorder_of(&key.camera)
            .filter(|n| *n != me)
            .and_then(|n| Some((view.get(&n)?.clone(), n)));
        let (remote, mut guessed) = self.rt.block_on(async {
            let spans = self.info.remote_spans(key, start, end, who.clone());
            match &guess {
                Some((url, node)) => {
                    let pq = plan_path(key, start, end);
                    let (s, p) = futures::future::join(spans, conn.get_json_async(url, &pq)).await;
                    (s, p.ok().map(|p| (node.clone(), p)))
                }
                None => (spans.await, None),
            }
        });
        let mut holders = vec![Holder {
            node: me.clone(),
            url: None,
            spans: mine,
        }];
        let mut down: Vec<(String, Time90k, Time90k, String)> = Vec::new();
        for r in remote {
            match r {
                NodeFootage::Spans { node, spans } if !spans.is_empty() => {
                    let url = view.get(&node).cloned();
                    match url {
                        Some(url) => holders.push(Holder {
                            node,
                            url: Some(url),
                            spans,
                        }),
                        None => {
                            for s in spans {
                                down.push((
                                    node.clone(),
                                    s.start,
                                    s.end,
                                    "left the cluster".into(),
                                ));
                            }
                        }
                    }
                }
                other => down.extend(other.unavailable_part()),
            }
        }
        if holders.len() == 1 && down.is_empty() {
            // Nobody else holds footage of the range: exactly the single-node answer.
            return Ok(Layout::Local);
        }
        let merged = vigie_store::spans::merge_ranges(
            holders
                .iter()
                .flat_map(|h| h.spans.iter().map(|s| (s.start, s.end))),
            start,
            end,
        );
        // Footage only an unreachable node holds.
        let mut missing = Vec::new();
        let mut missing_parts = Vec::new();
        for (node, a, b, reason) in &down {
            let (a, b) = ((*a).max(start), (*b).min(end));
            if a >= b {
                continue;
            }
            let inside =
                vigie_store::spans::merge_ranges(merged.iter().map(|s| (s.start, s.end)), a, b);
            let uncovered = vigie_store::gaps(&inside, a, b);
            for (ua, ub) in &uncovered {
                missing_parts.push((node.clone(), *ua, *ub, reason.clone()));
            }
            if !uncovered.is_empty() {
                missing.push(format!(
                    "{node} ({reason}) from {} to {}",
                    a.to_rfc3339(),
                    b.to_rfc3339()
                ));
            }
        }
        if !missing.is_empty() && opts.refuse_unavailable {
            return Err(conflict(
                format!(
                    "part of the range is held by nodes that cannot be reached now: {} (ask again later, or pass gaps=skip for what is reachable)",
                    missing.join(", ")
                ),
                merged,
            ));
        }
        if merged.is_empty() {
            return Err(FootageError::NoRecording {
                key: key.clone(),
                start,
                end,
            });
        }
        if merged.len() > 1 && req.gaps == GapPolicy::Refuse {
            return Err(conflict(
                PlaybackError::Gaps {
                    spans: merged.clone(),
                }
                .to_string(),
                merged,
            ));
        }
        let spans_of: Vec<Vec<Span>> = holders.iter().map(|h| h.spans.clone()).collect();
        let stretches = choose(&spans_of, start, end);
        // The guessed plan of the whole window is the plan of a stretch when that stretch is
        // its holder's only one and holds all its spans in the window (the same segments, cut
        // at the same instants).
        let reusable = |h: usize, a: Time90k, b: Time90k| -> bool {
            let holder = &holders[h];
            guessed.as_ref().is_some_and(|(n, _)| *n == holder.node)
                && stretches.iter().filter(|s| s.0 == h).count() == 1
                && holder.spans.first().is_some_and(|s| s.start >= a)
                && holder.spans.last().is_some_and(|s| s.end <= b)
        };
        let reuse: Vec<bool> = stretches
            .iter()
            .map(|(h, a, b)| reusable(*h, *a, *b))
            .collect();
        // The other holders' plans, asked in parallel.
        let mut answers = self
            .rt
            .block_on(futures::future::join_all(
                stretches
                    .iter()
                    .zip(&reuse)
                    .filter_map(|((h, a, b), reuse)| {
                        let url = holders[*h].url.as_ref()?;
                        let pq = plan_path(key, *a, *b);
                        let conn = &conn;
                        let guessed = if *reuse {
                            guessed.take().map(|(_, v)| v)
                        } else {
                            None
                        };
                        Some(async move {
                            match guessed {
                                Some(v) => Ok(v),
                                None => conn.get_json_async(url, &pq).await,
                            }
                        })
                    }),
            ))
            .into_iter();
        let mut subs = Vec::new();
        for (h, a, b) in stretches {
            let holder = &holders[h];
            let sub = match &holder.url {
                None => sub_local(&self.local.0, &holder.node, key, a, b)?,
                Some(url) => answers
                    .next()
                    .unwrap_or_else(|| Err("no answer".into()))
                    .and_then(|v| sub_remote(v, &holder.node, url, key, a, b))
                    .map_err(|e| {
                    tracing::warn!(node = %holder.node, camera = %key.camera, stream = %key.stream, error = %e, "plan of another node failed");
                    conflict(
                        format!(
                            "part of the range is held by {}, which cannot be reached now ({e}); ask again later",
                            holder.node
                        ),
                        merged.clone(),
                    )
                })?,
            };
            subs.extend(sub);
        }
        if subs.is_empty() {
            return Err(FootageError::NoRecording {
                key: key.clone(),
                start,
                end,
            });
        }
        let codecs: std::collections::BTreeSet<&str> = subs
            .iter()
            .flat_map(|s| s.sample_entries.iter().map(|e| codec_of(e)))
            .collect();
        if codecs.len() > 1 {
            return Err(conflict(
                PlaybackError::CodecChange { ranges: Vec::new() }.to_string(),
                subs.iter()
                    .map(|s| Span {
                        start: s.start,
                        end: s.end,
                    })
                    .collect(),
            ));
        }
        let etag = etag_of(req, &subs);
        let cache_key = format!("{etag}|{}", who.actor);
        if !opts.export
            && let Ok(c) = self.files.lock()
            && let Some((_, mp4)) = c.iter().find(|(k, _)| *k == cache_key)
        {
            return Ok(Layout::Cached(Prepared {
                mp4: mp4.clone(),
                etag,
                spans: merged,
            }));
        }
        let codecs = if opts.export {
            self.codecs_of(&subs)
        } else {
            Vec::new()
        };
        let stretches = subs
            .iter()
            .map(|s| (s.node.clone(), s.start, s.end))
            .collect();
        let (mut input, files, tables, wall) = combine(&subs);
        if let Some(tz) = &req.subtitles {
            input.cues = vigie_footage::cues(&wall, tz);
        }
        let ctx = Arc::new(FileCtx {
            conn,
            files: files.clone(),
            pieces: OnceLock::new(),
        });
        let id = register(&ctx);
        input.files = files
            .iter()
            .enumerate()
            .map(|(n, f)| match f {
                FileAt::Local(p) => p.clone(),
                FileAt::Remote { .. } => PathBuf::from(format!("{REMOTE_MARK}{id}/{n}")),
            })
            .collect();
        let source = Arc::new(ClusterPieces {
            ctx,
            tables,
            kept: Mutex::new(VecDeque::new()),
        });
        let _ = source.ctx.pieces.set(Arc::downgrade(&source));
        let remote = files.iter().any(|f| matches!(f, FileAt::Remote { .. }));
        let lazy = opts.export.then(|| input.clone());
        let mp4 = Arc::new(progressive::build_lazy(input, source.clone()).map_err(|e| {
            FootageError::Store(StoreError::Corrupt {
                what: format!("cluster playback plan of {key}: {e}"),
            })
        })?);
        if !opts.export
            && let Ok(mut c) = self.files.lock()
        {
            c.push_front((cache_key, mp4.clone()));
            c.truncate(FILES_KEPT);
        }
        Ok(Layout::Laid(Box::new(Laid {
            mp4,
            etag,
            spans: merged,
            stretches,
            missing: missing_parts,
            input: lazy.unwrap_or_default(),
            source,
            remote,
            codecs,
        })))
    }

    /// RFC 6381 codec strings of the stretches, in order of appearance: given by the holders
    /// (`/plan`), looked up in the store for this node's.
    fn codecs_of(&self, subs: &[SubPlan]) -> Vec<String> {
        let store = &self.local.0;
        let mut out: Vec<String> = Vec::new();
        let mut push = |c: String| {
            if !out.contains(&c) {
                out.push(c);
            }
        };
        for sp in subs {
            if !sp.codecs.is_empty() {
                sp.codecs.iter().cloned().for_each(&mut push);
                continue;
            }
            for (_, _, f, _, words) in &sp.pieces {
                if !matches!(f, FileAt::Local(_)) {
                    continue;
                }
                let params = store
                    .segment(words[0])
                    .ok()
                    .flatten()
                    .and_then(|s| store.params(s.params_id).ok().flatten());
                if let Some(p) = params {
                    push(p.rfc6381_codec);
                }
            }
        }
        out
    }
}

/// Strong ETag of a file laid out from several nodes' plans.
fn etag_of(req: &PlaybackRequest, subs: &[SubPlan]) -> String {
    let mut h = vigie_footage::etag_hasher(b"vigie video.mp4 cluster", req);
    for s in subs {
        h.update(s.node.as_bytes());
        h.update([0]);
        h.update(s.start.0.to_be_bytes());
        h.update(s.end.0.to_be_bytes());
        for (_, _, _, _, words) in &s.pieces {
            for w in words {
                h.update(w.to_be_bytes());
            }
        }
    }
    let digest = h.finalize();
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

impl Footage for ClusterFootage {
    fn spans(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<Span>, StoreError> {
        self.local.spans(key, start, end)
    }
    fn segments(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
    ) -> Result<Vec<SegmentInfo>, StoreError> {
        self.local.segments(key, start, end)
    }
    fn segments_page(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        limit: usize,
    ) -> Result<(Vec<SegmentInfo>, Option<Time90k>), StoreError> {
        self.local.segments_page(key, start, end, limit)
    }
    fn check(
        &self,
        key: &StreamKey,
        start: Time90k,
        end: Time90k,
        gaps: GapPolicy,
    ) -> Result<(), PlaybackError> {
        self.local.check(key, start, end, gaps)
    }
    fn prepare(&self, req: &PlaybackRequest) -> Result<Prepared, FootageError> {
        self.prepare_cluster(req)
    }
    fn read(
        &self,
        mp4: &VirtualMp4,
        start: u64,
        end: u64,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> std::io::Result<()> {
        match ctx_of(mp4) {
            Some(ctx) => read_cluster(&ctx, mp4, start, end, send),
            None => self.local.read(mp4, start, end, send),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(a: i64, b: i64) -> Span {
        Span {
            start: Time90k(a),
            end: Time90k(b),
        }
    }

    #[test]
    fn one_copy_per_instant_switching_at_span_starts() {
        let t = Time90k;
        // A failover: node 0 until 100, node 1 from 103.
        let c = choose(&[vec![s(0, 100)], vec![s(103, 300)]], t(10), t(200));
        assert_eq!(c, [(0, t(10), t(100)), (1, t(103), t(200))]);
        // A handover: both hold 90..100; the switch is at node 1's start (a key frame).
        let c = choose(&[vec![s(0, 100)], vec![s(90, 300)]], t(10), t(200));
        assert_eq!(c, [(0, t(10), t(90)), (1, t(90), t(200))]);
        // Two full copies: the first holder (this node) only.
        let c = choose(&[vec![s(0, 300)], vec![s(0, 300)]], t(10), t(200));
        assert_eq!(c, [(0, t(10), t(200))]);
        // Nothing at the start; a copy inside another is not used.
        let c = choose(&[vec![s(50, 60)], vec![s(40, 300)]], t(10), t(200));
        assert_eq!(c, [(1, t(40), t(200))]);
        // Back and forth.
        let c = choose(
            &[vec![s(0, 100), s(200, 300)], vec![s(100, 200)]],
            t(0),
            t(300),
        );
        assert_eq!(
            c,
            [(0, t(0), t(100)), (1, t(100), t(200)), (0, t(200), t(300))]
        );
        assert!(choose(&[vec![], vec![]], t(0), t(10)).is_empty());
    }

    fn sub(node: &str, entry: &'static [u8], skip: u64, dur: u64, media: &[u64]) -> SubPlan {
        SubPlan {
            node: node.into(),
            start: Time90k(0),
            end: Time90k(1),
            sample_entries: vec![Bytes::from_static(entry)],
            width: 640,
            height: 360,
            skip_90k: skip,
            duration_90k: dur,
            wall: vec![Piece {
                presentation_90k: 0,
                wall_start: Time90k(1000),
                duration_90k: dur,
            }],
            pieces: media
                .iter()
                .map(|m| {
                    (
                        0,
                        PieceSummary {
                            samples: 1,
                            key_frames: 1,
                            stts_runs: 1,
                            chunks: 1,
                            stsc_runs: 1,
                            payload_bytes: 10,
                            media_90k: *m,
                        },
                        FileAt::Local(PathBuf::from("/x")),
                        TablesAt::Remote {
                            url: String::new(),
                            key: StreamKey::new("c", "main"),
                            segment: 1,
                            first: 0,
                            samples: 1,
                        },
                        [0; 4],
                    )
                })
                .collect(),
            codecs: Vec::new(),
        }
    }

    #[test]
    fn stretches_are_laid_end_to_end_under_one_edit() {
        // First stretch: media 1000, skip 100 (start between key frames), clip 50 at its end;
        // second: media 800 (two pieces), its own skip 0, clip 30; same codec parameters.
        let a = sub("rec-a", b"\0\0\0\x08avc1", 100, 850, &[1000]);
        let b = sub("rec-b", b"\0\0\0\x08avc1", 0, 770, &[500, 300]);
        let (input, files, tables, wall) = combine(&[a, b]);
        assert_eq!(input.skip_90k, 100);
        // Everything but the first stretch's skip and the last one's clip is presented.
        assert_eq!(input.duration_90k, 1000 + 800 - 100 - 30);
        assert_eq!(
            input.sample_entries.len(),
            1,
            "equal sample entries are one"
        );
        assert_eq!(input.pieces.len(), 3);
        assert_eq!((files.len(), tables.len()), (3, 3));
        assert!(input.pieces.iter().all(|p| p.description == 0));
        // The second stretch's wall map starts after the first's media, minus the skip.
        assert_eq!(wall[0].presentation_90k, 0);
        assert_eq!(wall[1].presentation_90k, 1000 - 100);
        // Other parameters: a second sample description.
        let c = sub("rec-c", b"\0\0\0\x08avc1x", 0, 300, &[300]);
        let a = sub("rec-a", b"\0\0\0\x08avc1", 0, 1000, &[1000]);
        let (input, ..) = combine(&[a, c]);
        assert_eq!(input.sample_entries.len(), 2);
        assert_eq!(input.pieces[1].description, 1);
        assert_eq!(codec_of(b"\0\0\0\x08hvc1"), "h265");
    }
}
