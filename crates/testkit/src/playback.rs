//! Helpers for the video.mp4 end-to-end tests: fetching ranges, decoded-frame hashes, and the
//! standard checks (ffmpeg clean, frame count, duration, first displayed frame) of a range.

use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};
use jiff::{SignedDuration, Timestamp};

use crate::Vigie;
use crate::media::{ffmpeg_decodes, ffprobe};

/// One recorded segment as listed by `recordings?segments=1`.
#[derive(Debug, Clone)]
pub struct ListedSegment {
    pub id: u64,
    pub start: Timestamp,
    pub end: Timestamp,
}

/// Segments of `cam/main` in a wide window around now.
pub async fn segments(v: &Vigie, cam: &str) -> anyhow::Result<Vec<ListedSegment>> {
    let now = Timestamp::now();
    let (a, b) = (
        now - SignedDuration::from_hours(1),
        now + SignedDuration::from_hours(1),
    );
    let (st, j) = v
        .get(&format!(
            "/api/v1/cameras/{cam}/streams/main/recordings?start={a}&end={b}&segments=1"
        ))
        .await?;
    if st != 200 {
        bail!("recordings: {st} {j}");
    }
    let mut out = Vec::new();
    for s in j["segments"].as_array().context("segments")? {
        out.push(ListedSegment {
            id: s["id"].as_u64().context("id")?,
            start: s["start"].as_str().context("start")?.parse()?,
            end: s["end"].as_str().context("end")?.parse()?,
        });
    }
    Ok(out)
}

/// The file of segment `id` under the data directory.
pub fn segment_file(v: &Vigie, id: u64) -> anyhow::Result<PathBuf> {
    let prefix = format!("{id:012}-");
    crate::media::mp4_files(&v.data_dir.join("recordings"))
        .into_iter()
        .find(|p| {
            p.file_name()
                .and_then(|n| n.to_str())
                .is_some_and(|n| n.starts_with(&prefix))
        })
        .with_context(|| format!("no file for segment {id}"))
}

/// MD5 of each decoded frame (`ffmpeg -f framemd5`), in presentation order.
pub fn frame_md5s(path: &Path) -> anyhow::Result<Vec<String>> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(path)
        .args(["-map", "0:v:0", "-f", "framemd5", "-"])
        .output()
        .context("running ffmpeg")?;
    if !out.status.success() {
        bail!("ffmpeg framemd5: {}", String::from_utf8_lossy(&out.stderr));
    }
    Ok(String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .filter_map(|l| l.rsplit(',').next().map(|s| s.trim().to_owned()))
        .collect())
}

/// `video.mp4` path and query for `cam/main` over `[start, start + secs)`.
pub fn video_path(cam: &str, start: Timestamp, secs: f64, extra: &str) -> String {
    format!("/api/v1/cameras/{cam}/streams/main/video.mp4?start={start}&duration={secs}{extra}")
}

/// GETs `path` and writes the body to `dest`; returns (status, headers, body).
pub async fn fetch(
    v: &Vigie,
    path: &str,
    headers: &[(&str, &str)],
) -> anyhow::Result<(u16, reqwest::header::HeaderMap, bytes::Bytes)> {
    let mut r = v.http().get(format!("{}{}", v.base_url(), path));
    for (k, val) in headers {
        r = r.header(*k, *val);
    }
    let resp = r.send().await?;
    let st = resp.status().as_u16();
    let h = resp.headers().clone();
    Ok((st, h, resp.bytes().await?))
}

/// Checks one range of a 25 fps stream: `start` must fall in the middle of a frame of segment
/// `seg` (offset `k + 0.5` frames) and `secs` be a multiple of 40 ms. Asserts that ffmpeg decodes
/// the file cleanly, that it holds exactly the frames shown in the range (`secs × 25 + 1`), that
/// its duration is within one frame of `secs`, and that its first displayed frame is the stored
/// frame shown at `start` (decoded-frame MD5 against the segment file).
pub async fn check_range(
    v: &Vigie,
    cam: &str,
    seg: &ListedSegment,
    start_frame: u32,
    secs: f64,
    work: &Path,
) -> anyhow::Result<()> {
    let start = seg.start + SignedDuration::from_micros(i64::from(start_frame) * 40_000 + 20_000);
    let path = video_path(cam, start, secs, "");
    let (st, _, body) = fetch(v, &path, &[]).await?;
    if st != 200 {
        bail!("{path}: {st} {}", String::from_utf8_lossy(&body));
    }
    let out = work.join(format!("range-{}-{start_frame}-{secs}.mp4", seg.id));
    std::fs::write(&out, &body)?;
    ffmpeg_decodes(&out)?;
    let p = ffprobe(&out)?;
    let want_frames = (secs * 25.0).round() as u64 + 1;
    if p.frames != want_frames {
        bail!("{path}: {} frames decoded, want {want_frames}", p.frames);
    }
    if (p.duration_s - secs).abs() > 0.04 {
        bail!("{path}: duration {} s, asked {secs} s", p.duration_s);
    }
    let ours = frame_md5s(&out)?;
    let stored = frame_md5s(&segment_file(v, seg.id)?)?;
    let want = stored
        .get(start_frame as usize)
        .with_context(|| format!("segment {} has {} frames", seg.id, stored.len()))?;
    if ours.first() != Some(want) {
        let found = ours
            .first()
            .and_then(|f| stored.iter().position(|s| s == f));
        bail!("{path}: first frame is stored frame {found:?}, want {start_frame}");
    }
    Ok(())
}
