//! Tests of the virtual progressive MP4: structure (including > 4 GiB), byte-range slicing, and
//! real decoding with ffmpeg (edit list, several sample descriptions, subtitle track).

use std::io::Write;
use std::process::Command;

use bytes::Bytes;

use crate::progressive::*;
use crate::testutil::{TestStream, generate_h264, validate_with_ffmpeg};
use crate::write::SampleInfo;

/// Top-level boxes of `buf`: (type, offset, size) with 64-bit sizes resolved.
fn top_boxes(buf: &[u8], total_len: u64) -> Vec<([u8; 4], u64, u64)> {
    let mut out = Vec::new();
    let mut pos = 0u64;
    while (pos as usize) + 8 <= buf.len() {
        let p = pos as usize;
        let size32 = u32::from_be_bytes(buf[p..p + 4].try_into().unwrap());
        let typ: [u8; 4] = buf[p + 4..p + 8].try_into().unwrap();
        let size = match size32 {
            1 => u64::from_be_bytes(buf[p + 8..p + 16].try_into().unwrap()),
            0 => total_len - pos,
            s => u64::from(s),
        };
        out.push((typ, pos, size));
        pos += size;
    }
    out
}

/// Finds the first box of type `typ` anywhere under `buf[range]` (containers walked).
fn find_box(buf: &[u8], typ: &[u8; 4]) -> Option<(usize, usize)> {
    const CONTAINERS: [&[u8; 4]; 6] = [b"moov", b"trak", b"mdia", b"minf", b"stbl", b"edts"];
    let mut stack = vec![(0usize, buf.len())];
    while let Some((mut pos, end)) = stack.pop() {
        while pos + 8 <= end {
            let size = u32::from_be_bytes(buf[pos..pos + 4].try_into().unwrap()) as usize;
            let t: &[u8] = &buf[pos + 4..pos + 8];
            if size < 8 || pos + size > end {
                break;
            }
            if t == typ {
                return Some((pos, size));
            }
            if CONTAINERS.iter().any(|c| &c[..] == t) {
                stack.push((pos + 8, pos + size));
            }
            pos += size;
        }
    }
    None
}

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().unwrap())
}
fn be64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().unwrap())
}

/// `ftyp` + `moov` + `mdat` header, with every lazily generated table rendered.
fn header(v: &VirtualMp4) -> Bytes {
    Bytes::from(v.read_to_vec(0, v.header_len).unwrap())
}

fn slices(v: &VirtualMp4, a: u64, b: u64) -> Vec<Slice> {
    let mut out = Vec::new();
    v.for_each_slice(a, b, |s| {
        out.push(s);
        true
    })
    .unwrap();
    out
}

#[test]
fn over_4_gib_uses_64_bit_sizes_and_offsets() {
    // 24 h at 25 fps, 1 s chunks of 25 samples, ~2.2 KiB... sized so the payload exceeds 4 GiB.
    let n = 25 * 3600 * 24;
    let samples: Vec<SampleInfo> = (0..n)
        .map(|i| SampleInfo {
            duration_90k: 3600,
            bytes: if i % 50 == 0 { 120_000 } else { 60_000 },
            is_key: i % 50 == 0,
        })
        .collect();
    let mut chunks = Vec::new();
    let mut off = 1000u64;
    for (k, c) in samples.chunks(25).enumerate() {
        chunks.push(Chunk {
            file: (k / 60) as u32,
            offset: off,
            first_sample: (k * 25) as u32,
            samples: 25,
            description: 0,
        });
        off += c.iter().map(|s| u64::from(s.bytes)).sum::<u64>() + 200;
    }
    let payload: u64 = samples.iter().map(|s| u64::from(s.bytes)).sum();
    assert!(payload > 4 << 30);
    let input = Input {
        sample_entries: vec![Bytes::from_static(b"\0\0\0\x10avc1fakeentry")],
        width: 1920,
        height: 1080,
        files: (0..1440).map(|i| format!("/f/{i}.mp4").into()).collect(),
        samples,
        chunks,
        skip_90k: 7200,
        duration_90k: 86_400 * 90_000 - 7200,
        cues: Vec::new(),
    };
    let v = build(&input).unwrap();
    let h = header(&v);
    assert_eq!(h.len() as u64, v.header_len);
    assert_eq!(v.total_len, v.header_len + payload);
    let boxes = top_boxes(&h, v.total_len);
    let types: Vec<&[u8; 4]> = boxes.iter().map(|b| &b.0).collect();
    assert_eq!(types, [b"ftyp", b"moov", b"mdat"]);
    let (_, mdat_at, mdat_size) = boxes[2];
    assert_eq!(be32(&h, mdat_at as usize), 1, "mdat uses largesize");
    assert_eq!(mdat_size, payload + 16);
    assert_eq!(mdat_at + mdat_size, v.total_len);
    // mvhd/tkhd/mdhd v1 with 64-bit durations beyond u32.
    let (mvhd, _) = find_box(&h, b"mvhd").unwrap();
    assert_eq!(h[mvhd + 8], 1);
    assert_eq!(be64(&h, mvhd + 12 + 16 + 4), 86_400 * 90_000 - 7200);
    let (mdhd, _) = find_box(&h, b"mdhd").unwrap();
    assert_eq!(h[mdhd + 8], 1);
    assert_eq!(be64(&h, mdhd + 12 + 16 + 4), 86_400 * 90_000);
    // elst v1 with media_time = skip.
    let (elst, _) = find_box(&h, b"elst").unwrap();
    assert_eq!((h[elst + 8], be32(&h, elst + 12)), (1, 1));
    assert_eq!(be64(&h, elst + 16), 86_400 * 90_000 - 7200);
    assert_eq!(be64(&h, elst + 24), 7200);
    // co64: one entry per chunk, first at the payload start, last beyond 4 GiB and matching
    // the slices of the virtual file.
    assert!(find_box(&h, b"stco").is_none());
    let (co64, size) = find_box(&h, b"co64").unwrap();
    let count = be32(&h, co64 + 12) as usize;
    assert_eq!(count, input.chunks.len());
    assert_eq!(size, 16 + 8 * count);
    assert_eq!(be64(&h, co64 + 16), v.header_len);
    let last = be64(&h, co64 + 16 + 8 * (count - 1));
    assert!(last > u64::from(u32::MAX));
    let last_chunk = input.chunks.last().unwrap();
    let s = slices(&v, last, last + 10);
    assert_eq!(
        s,
        vec![Slice::File {
            file: last_chunk.file,
            offset: last_chunk.offset,
            len: 10
        }]
    );
    // stsz / stss / stsc / stts are compact and consistent.
    let (stsz, _) = find_box(&h, b"stsz").unwrap();
    assert_eq!(be32(&h, stsz + 16) as usize, n);
    let (stss, _) = find_box(&h, b"stss").unwrap();
    assert_eq!(be32(&h, stss + 12) as usize, n / 50);
    // Runs are per piece (here one per file of 60 chunks): 1,440 `stsc` and `stts` entries.
    let (stsc, _) = find_box(&h, b"stsc").unwrap();
    assert_eq!(be32(&h, stsc + 12), 1440);
    assert_eq!(
        (be32(&h, stsc + 16 + 12), be32(&h, stsc + 20 + 12)),
        (61, 25),
        "the second piece's entry starts at chunk 61"
    );
    let (stts, _) = find_box(&h, b"stts").unwrap();
    assert_eq!((be32(&h, stts + 12), be32(&h, stts + 16)), (1440, 1500));
}

#[test]
fn slices_cover_any_range_exactly() {
    let samples: Vec<SampleInfo> = (0..10)
        .map(|i| SampleInfo {
            duration_90k: 3000,
            bytes: 10 + i,
            is_key: i == 0,
        })
        .collect();
    let input = Input {
        sample_entries: vec![Bytes::from_static(b"\0\0\0\x08avc1")],
        width: 2,
        height: 2,
        files: vec!["/a".into(), "/b".into()],
        chunks: vec![
            Chunk {
                file: 0,
                offset: 100,
                first_sample: 0,
                samples: 4,
                description: 0,
            },
            Chunk {
                file: 1,
                offset: 50,
                first_sample: 4,
                samples: 6,
                description: 0,
            },
        ],
        samples,
        skip_90k: 0,
        duration_90k: 30_000,
        cues: vec![Cue {
            duration_90k: 30_000,
            text: "12:00:00".into(),
        }],
    };
    let v = build(&input).unwrap();
    let total = v.total_len;
    let flat = |a: u64, b: u64| -> Vec<(u32, u64)> {
        // (file or u32::MAX for memory, offset) of each byte.
        let mut out = Vec::new();
        for s in slices(&v, a, b) {
            match s {
                Slice::Mem(m) => out.extend((0..m.len()).map(|i| (u32::MAX, i as u64))),
                Slice::File { file, offset, len } => {
                    out.extend((0..len).map(|i| (file, offset + i)))
                }
            }
        }
        out
    };
    let all = flat(0, total);
    assert_eq!(all.len() as u64, total);
    for a in 0..total {
        for b in [a + 1, a + 7, total, total + 5] {
            let got = flat(a, b);
            assert_eq!(got.len() as u64, b.min(total) - a, "[{a},{b})");
            let want = &all[a as usize..b.min(total) as usize];
            for (g, w) in got.iter().zip(want) {
                assert_eq!(g.0, w.0, "[{a},{b})");
                if g.0 != u32::MAX {
                    assert_eq!(g.1, w.1, "[{a},{b})");
                }
            }
        }
    }
}

#[test]
fn bad_input_is_rejected() {
    let mut input = Input::default();
    assert_eq!(build(&input).unwrap_err(), BuildError::Empty);
    input.samples = vec![SampleInfo {
        duration_90k: 1,
        bytes: 1,
        is_key: true,
    }];
    input.sample_entries = vec![Bytes::new()];
    input.files = vec!["/x".into()];
    input.chunks = vec![Chunk {
        file: 3,
        offset: 0,
        first_sample: 0,
        samples: 1,
        description: 0,
    }];
    assert!(matches!(
        build(&input),
        Err(BuildError::BadReference { .. })
    ));
    input.chunks[0].file = 0;
    input.duration_90k = 2;
    assert!(matches!(build(&input), Err(BuildError::Edit { .. })));
}

/// Writes `streams` one after another into one "segment" file per stream (fragments of 25
/// frames separated by 40 junk bytes standing for moof headers), then builds the virtual file,
/// materialises it from its slices and returns its path.
fn materialise(
    dir: &std::path::Path,
    streams: &[&TestStream],
    first_frame: usize,
    skip_90k: u64,
    cues: Vec<Cue>,
) -> (std::path::PathBuf, Input) {
    let mut input = Input {
        width: streams[0].params.width,
        height: streams[0].params.height,
        skip_90k,
        cues,
        ..Input::default()
    };
    for (k, st) in streams.iter().enumerate() {
        let path = dir.join(format!("seg{k}.bin"));
        let mut f = std::fs::File::create(&path).unwrap();
        f.write_all(&[0x55; 300]).unwrap();
        let mut off = 300u64;
        input.files.push(path);
        input.sample_entries.push(st.params.sample_entry.clone());
        let frames = if k == 0 {
            &st.frames[first_frame..]
        } else {
            &st.frames[..]
        };
        for group in frames.chunks(25) {
            f.write_all(&[0xee; 40]).unwrap();
            off += 40;
            input.chunks.push(Chunk {
                file: k as u32,
                offset: off,
                first_sample: input.samples.len() as u32,
                samples: group.len() as u32,
                description: k as u32,
            });
            for (data, key) in group {
                f.write_all(data).unwrap();
                off += data.len() as u64;
                input.samples.push(SampleInfo {
                    duration_90k: 3600,
                    bytes: data.len() as u32,
                    is_key: *key,
                });
            }
        }
    }
    let media: u64 = input
        .samples
        .iter()
        .map(|s| u64::from(s.duration_90k))
        .sum();
    input.duration_90k = media - skip_90k;
    let v = build(&input).unwrap();
    let out = dir.join("out.mp4");
    let mut o = std::fs::File::create(&out).unwrap();
    let files: Vec<Vec<u8>> = v.files.iter().map(|p| std::fs::read(p).unwrap()).collect();
    for s in slices(&v, 0, v.total_len) {
        match s {
            Slice::Mem(m) => o.write_all(&m).unwrap(),
            Slice::File { file, offset, len } => o
                .write_all(&files[file as usize][offset as usize..(offset + len) as usize])
                .unwrap(),
        }
    }
    drop(o);
    assert_eq!(std::fs::metadata(&out).unwrap().len(), v.total_len);
    (out, input)
}

fn ffprobe_json(path: &std::path::Path, args: &[&str]) -> serde_like::Value {
    let o = Command::new("ffprobe")
        .args(["-v", "error", "-of", "json"])
        .args(args)
        .arg(path)
        .output()
        .unwrap();
    assert!(o.status.success(), "{}", String::from_utf8_lossy(&o.stderr));
    serde_like::parse(&String::from_utf8_lossy(&o.stdout))
}

/// A tiny "parser" for the few ffprobe values the tests need: returns the raw JSON text with
/// helpers to pull `"key": value` pairs (avoids a serde_json dependency in this crate).
mod serde_like {
    pub struct Value(pub String);
    pub fn parse(s: &str) -> Value {
        Value(s.to_owned())
    }
    impl Value {
        pub fn all(&self, key: &str) -> Vec<String> {
            let pat = format!("\"{key}\": ");
            self.0
                .match_indices(&pat)
                .map(|(i, _)| {
                    let rest = &self.0[i + pat.len()..];
                    let end = rest.find([',', '\n', '}']).unwrap_or(rest.len());
                    rest[..end].trim().trim_matches('"').to_owned()
                })
                .collect()
        }
    }
}

#[test]
fn ffmpeg_decodes_edit_list_and_subtitles() {
    let dir = tempfile::tempdir().unwrap();
    let st = generate_h264(dir.path(), 320, 240, 25, 25, 4);
    // Start 10 frames into the first GOP: the file holds the whole GOP, the edit list skips 10.
    let cues: Vec<Cue> = (0..4)
        .map(|s| Cue {
            duration_90k: if s == 3 { 90_000 - 36_000 } else { 90_000 },
            text: format!("2026-11-28 22:00:0{s} +01:00"),
        })
        .collect();
    let (out, input) = materialise(dir.path(), &[&st], 0, 36_000, cues);
    let val = validate_with_ffmpeg(&out);
    assert!(val.ffmpeg_ok, "{}", val.ffmpeg_stderr);
    assert_eq!(input.samples.len(), 100);
    // ffprobe counts the frames presented after the edit.
    let p = ffprobe_json(
        &out,
        &[
            "-count_frames",
            "-show_entries",
            "stream=codec_type,nb_read_frames,nb_read_packets:format=duration",
        ],
    );
    let types = p.all("codec_type");
    assert_eq!(types, ["video", "subtitle"], "{}", p.0);
    let duration: f64 = p.all("duration")[0].parse().unwrap();
    assert!((duration - 3.6).abs() <= 0.04, "duration {duration}");
    let frames: Vec<u64> = p
        .all("nb_read_frames")
        .iter()
        .filter_map(|s| s.parse().ok())
        .collect();
    assert_eq!(frames[0], 90, "{}", p.0);
    // The subtitle track reads back as mov_text with our cue texts.
    let o = Command::new("ffmpeg")
        .args(["-nostdin", "-v", "error", "-i"])
        .arg(&out)
        .args(["-map", "0:s:0", "-f", "srt", "-"])
        .output()
        .unwrap();
    let srt = String::from_utf8_lossy(&o.stdout);
    assert!(srt.contains("2026-11-28 22:00:01 +01:00"), "{srt}");
}

#[test]
fn ffmpeg_decodes_several_sample_descriptions() {
    let dir = tempfile::tempdir().unwrap();
    let a = generate_h264(dir.path(), 320, 240, 25, 25, 2);
    let b = generate_h264(dir.path(), 640, 360, 25, 25, 2);
    let (out, input) = materialise(dir.path(), &[&a, &b], 0, 0, Vec::new());
    let val = validate_with_ffmpeg(&out);
    assert!(val.ffmpeg_ok, "{}", val.ffmpeg_stderr);
    assert_eq!(val.frames, Some(input.samples.len() as u64));
}

/// A source whose tables no longer match the summaries the file was laid out with (an index
/// changed under a response): reading the affected share is an error, never wrong bytes.
#[test]
fn a_piece_that_differs_from_its_summary_is_an_error() {
    let tables = PieceTables {
        samples: (0..4)
            .map(|i| SampleInfo {
                duration_90k: 3600,
                bytes: 100 + i,
                is_key: i == 0,
            })
            .collect(),
        chunks: vec![ChunkLoc {
            offset: 10,
            samples: 4,
        }],
    };
    let summary = PieceSummary::of(&tables);
    assert_eq!(
        (
            summary.samples,
            summary.key_frames,
            summary.stts_runs,
            summary.chunks
        ),
        (4, 1, 1, 1)
    );
    assert_eq!((summary.payload_bytes, summary.media_90k), (406, 14_400));
    let mut shorter = tables.clone();
    shorter.samples.pop();
    shorter.chunks[0].samples = 3;
    let input = LazyInput {
        sample_entries: vec![Bytes::from_static(b"\0\0\0\x08avc1")],
        width: 2,
        height: 2,
        files: vec!["/nonexistent".into()],
        pieces: vec![PieceRef {
            file: 0,
            description: 0,
            summary,
        }],
        skip_90k: 0,
        duration_90k: 14_400,
        cues: Vec::new(),
    };
    let good = build_lazy(
        input.clone(),
        std::sync::Arc::new(MemSource(vec![tables.into()])),
    )
    .unwrap();
    good.read_to_vec(0, good.header_len).unwrap();
    let bad = build_lazy(input, std::sync::Arc::new(MemSource(vec![shorter.into()]))).unwrap();
    let e = bad.read_to_vec(0, bad.header_len).unwrap_err();
    assert!(e.to_string().contains("index inconsistent"), "{e}");
    let e = bad.read_to_vec(bad.header_len, bad.total_len).unwrap_err();
    assert!(e.to_string().contains("index inconsistent"), "{e}");
}
