//! Independent validation of media files with ffmpeg and ffprobe (never with our own parser).

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context, bail};

/// `ffmpeg -v error -xerror -i F -f null -`: decodes every frame, fails on the first error.
pub fn ffmpeg_decodes(path: &Path) -> anyhow::Result<()> {
    let out = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-xerror", "-i"])
        .arg(path)
        .args(["-f", "null", "-"])
        .output()
        .context("running ffmpeg")?;
    if !out.status.success() || !out.stderr.is_empty() {
        bail!(
            "ffmpeg -xerror failed on {} (status {}): {}",
            path.display(),
            out.status,
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// What ffprobe says of the first video stream, counting frames by decoding.
#[derive(Debug, Clone, PartialEq)]
pub struct Probe {
    pub codec: String,
    pub width: u32,
    pub height: u32,
    pub frames: u64,
    pub duration_s: f64,
}

/// Runs `ffprobe -v error ARGS INPUT` (INPUT a file or a URL) and returns its standard output;
/// fails with ffprobe's standard error when it exits non-zero. Every test that asks ffprobe
/// something goes through here.
pub fn ffprobe_output(input: impl AsRef<OsStr>, args: &[&str]) -> anyhow::Result<String> {
    let input = input.as_ref();
    let out = Command::new("ffprobe")
        .args(["-v", "error"])
        .args(args)
        .arg(input)
        .output()
        .context("running ffprobe")?;
    if !out.status.success() {
        bail!(
            "ffprobe failed on {}: {}",
            input.to_string_lossy(),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// The first video stream's codec, dimensions, frame count (by decoding) and the duration.
pub fn ffprobe(path: &Path) -> anyhow::Result<Probe> {
    let out = ffprobe_output(
        path,
        &[
            "-count_frames",
            "-select_streams",
            "v:0",
            "-show_entries",
            "stream=codec_name,width,height,nb_read_frames:format=duration",
            "-of",
            "json",
        ],
    )?;
    let v: serde_json::Value = serde_json::from_str(&out)?;
    let s = &v["streams"][0];
    let num = |x: &serde_json::Value| -> u64 {
        x.as_u64()
            .or_else(|| x.as_str().and_then(|s| s.parse().ok()))
            .unwrap_or(0)
    };
    Ok(Probe {
        codec: s["codec_name"].as_str().unwrap_or("").to_owned(),
        width: num(&s["width"]) as u32,
        height: num(&s["height"]) as u32,
        frames: num(&s["nb_read_frames"]),
        duration_s: v["format"]["duration"]
            .as_str()
            .and_then(|d| d.parse().ok())
            .unwrap_or(0.0),
    })
}

/// Every `.mp4` file under `dir`, sorted by path.
pub fn mp4_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_owned()];
    while let Some(d) = stack.pop() {
        let Ok(rd) = std::fs::read_dir(&d) else {
            continue;
        };
        for e in rd.flatten() {
            let p = e.path();
            if p.is_dir() {
                stack.push(p);
            } else if p.extension().is_some_and(|x| x == "mp4") {
                out.push(p);
            }
        }
    }
    out.sort();
    out
}
