//! Unit tests of the writer and the parser, including real-decoder validation with ffmpeg.

use std::io::Write;

use vigie_core::{Codec, VideoParams};

use crate::testutil::{avc_params, generate_h264, validate_with_ffmpeg};
use crate::*;

fn meta() -> SegmentMeta {
    SegmentMeta {
        camera: "cam-1".into(),
        stream: "main".into(),
        segment_id: 42,
        start_90k: 1_795_899_600 * 90_000,
        session_id: 7,
    }
}

fn synthetic_params() -> VideoParams {
    // A syntactically valid SPS/PPS pair is enough for the parser tests.
    avc_params(
        &[0x67, 0x4d, 0x40, 0x1f, 0xaa],
        &[0x68, 0xee, 0x3c, 0x80],
        320,
        240,
    )
}

/// Builds a file in memory: init, `n_frag` fragments of `per` samples, optional trailer.
fn synthetic_file(n_frag: usize, per: usize, trailer: bool) -> (Vec<u8>, Vec<Vec<SampleInfo>>) {
    let params = synthetic_params();
    let mut f = init_segment(&params, &meta());
    let mut frags = Vec::new();
    let mut t = 0u64;
    for k in 0..n_frag {
        let samples: Vec<SampleInfo> = (0..per)
            .map(|i| SampleInfo {
                duration_90k: 3600,
                bytes: 100 + (i as u32 * 7 + k as u32) % 50,
                is_key: i == 0,
            })
            .collect();
        f.extend(fragment_header(k as u32 + 1, t, &samples));
        for s in &samples {
            f.extend(std::iter::repeat_n(0xabu8, s.bytes as usize));
        }
        t += samples
            .iter()
            .map(|s| u64::from(s.duration_90k))
            .sum::<u64>();
        frags.push(samples);
    }
    if trailer {
        f.extend(trailer_box(&SegmentTrailer {
            wall_duration_90k: 12345,
            end_reason: "rotation".into(),
        }));
    }
    (f, frags)
}

#[test]
fn round_trip() {
    let (f, frags) = synthetic_file(3, 25, true);
    let p = parse_segment_bytes(&f);
    assert!(p.is_clean(), "{:?}", p.problem);
    let init = p.init.as_ref().unwrap();
    assert_eq!(init.meta, meta());
    assert_eq!(init.params, synthetic_params());
    assert_eq!(init.params.codec, Codec::H264);
    assert_eq!((init.params.width, init.params.height), (320, 240));
    assert_eq!(p.fragments.len(), 3);
    for (k, pf) in p.fragments.iter().enumerate() {
        assert_eq!(pf.samples, frags[k]);
        assert_eq!(pf.sequence, k as u32 + 1);
        assert_eq!(pf.base_media_decode_time_90k, k as u64 * 25 * 3600);
    }
    assert_eq!(p.fragments[0].offset, init.len);
    assert_eq!(p.trailer.as_ref().unwrap().end_reason, "rotation");
    assert_eq!(p.trailer.as_ref().unwrap().wall_duration_90k, 12345);
    assert_eq!(p.media_duration_90k(), 75 * 3600);
    assert_eq!(p.frames(), 75);
}

#[test]
fn truncation_at_every_offset_is_detected() {
    let (f, _) = synthetic_file(3, 5, true);
    let full = parse_segment_bytes(&f);
    let ends: Vec<u64> = full.fragments.iter().map(|fr| fr.end).collect();
    for cut in 0..f.len() {
        let p = parse_segment_bytes(&f[..cut]);
        assert!(p.complete_len <= cut as u64);
        let expect = ends.iter().filter(|&&e| e <= cut as u64).count();
        assert_eq!(p.fragments.len(), expect, "cut at {cut}");
        if let Some(init) = &p.init {
            let want = ends
                .iter()
                .rev()
                .find(|&&e| e <= cut as u64)
                .copied()
                .unwrap_or(init.len);
            assert_eq!(p.complete_len, want, "cut at {cut}");
            assert!(!p.is_clean() || cut as u64 == want);
        }
    }
}

#[test]
fn garbage_never_panics() {
    // Deterministic pseudo-random inputs: pure garbage, and valid files with corrupted bytes
    // or garbage appended.
    let mut seed = 0x9e37_79b9_7f4a_7c15u64;
    let mut rnd = move || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed
    };
    let (f, _) = synthetic_file(2, 4, false);
    for round in 0..3000 {
        let mut buf = if round % 3 == 0 {
            (0..(rnd() % 600) as usize)
                .map(|_| rnd() as u8)
                .collect::<Vec<u8>>()
        } else {
            f.clone()
        };
        if round % 3 == 1 && !buf.is_empty() {
            for _ in 0..1 + rnd() % 4 {
                let i = (rnd() as usize) % buf.len();
                buf[i] = rnd() as u8;
            }
        }
        if round % 3 == 2 {
            let n = rnd() % 64;
            buf.extend((0..n).map(|_| rnd() as u8));
            let p = parse_segment_bytes(&buf);
            assert_eq!(p.fragments.len(), 2);
            assert_eq!(p.complete_len, f.len() as u64);
        }
        let p = parse_segment_bytes(&buf);
        assert!(p.complete_len <= buf.len() as u64);
    }
    // Box headers claiming huge sizes.
    for bad in [
        &b"\0\0\0\x01moov\xff\xff\xff\xff\xff\xff\xff\xff"[..],
        b"\0\0\0\x04ftyp",
        b"\0\0\0\0moof",
        b"\xff\xff\xff\xffmdat",
    ] {
        let p = parse_segment_bytes(bad);
        assert!(p.init.is_none());
    }
}

#[test]
fn large_mdat_uses_largesize() {
    assert_eq!(mdat_header_len(100), 8);
    assert_eq!(mdat_header_len(u64::from(u32::MAX)), 16);
    let samples = [
        SampleInfo {
            duration_90k: 1,
            bytes: u32::MAX,
            is_key: true,
        },
        SampleInfo {
            duration_90k: 1,
            bytes: 10,
            is_key: false,
        },
    ];
    let h = fragment_header(1, 0, &samples);
    let n = h.len();
    assert_eq!(&h[n - 16..n - 8], &[0, 0, 0, 1, b'm', b'd', b'a', b't']);
    assert_eq!(
        u64::from_be_bytes(h[n - 8..].try_into().unwrap()),
        u64::from(u32::MAX) + 10 + 16
    );
}

#[test]
fn prft_is_ntp() {
    let b = prft_box(0, 0);
    assert_eq!(&b[4..8], b"prft");
    assert_eq!(
        u64::from_be_bytes(b[16..24].try_into().unwrap()) >> 32,
        2_208_988_800
    );
}

/// Writes a real H.264 stream as a segment and checks it with ffmpeg and ffprobe.
#[test]
fn real_h264_segment_decodes_with_ffmpeg() {
    let dir = tempfile::tempdir().unwrap();
    let s = generate_h264(dir.path(), 320, 240, 25, 25, 4);
    assert_eq!(s.frames.len(), 100);
    assert!(s.frames[0].1 && s.frames[25].1 && !s.frames[1].1);
    let path = dir.path().join("seg.mp4");
    let mut f = std::fs::File::create(&path).unwrap();
    f.write_all(&init_segment(&s.params, &meta())).unwrap();
    let mut t = 0;
    for (k, chunk) in s.frames.chunks(25).enumerate() {
        let samples: Vec<SampleInfo> = chunk
            .iter()
            .map(|(d, key)| SampleInfo {
                duration_90k: 3600,
                bytes: d.len() as u32,
                is_key: *key,
            })
            .collect();
        let hdr = fragment_header(k as u32 + 1, t, &samples);
        let mut bufs: Vec<std::io::IoSlice> = vec![std::io::IoSlice::new(&hdr)];
        bufs.extend(chunk.iter().map(|(d, _)| std::io::IoSlice::new(d)));
        for b in bufs {
            f.write_all(&b).unwrap();
        }
        t += 25 * 3600;
    }
    f.write_all(&trailer_box(&SegmentTrailer {
        wall_duration_90k: t as i64,
        end_reason: "shutdown".into(),
    }))
    .unwrap();
    drop(f);
    let v = validate_with_ffmpeg(&path);
    assert!(v.ffmpeg_ok, "ffmpeg: {}", v.ffmpeg_stderr);
    assert_eq!(v.frames, Some(100));
    let p = parse_segment(&mut std::fs::File::open(&path).unwrap()).unwrap();
    assert!(p.is_clean(), "{:?}", p.problem);
    assert_eq!(p.frames(), 100);
    assert_eq!(p.init.unwrap().params, *s.params);
    let probe = std::process::Command::new("ffprobe")
        .args([
            "-v",
            "error",
            "-show_entries",
            "stream=codec_name,width,height,r_frame_rate",
            "-of",
            "csv=p=0",
        ])
        .arg(&path)
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&probe.stdout).trim(),
        "h264,320,240,25/1"
    );
}

/// The init segment is part of every segment file on disk (and what recovery parses): its bytes
/// must not change by accident (e.g. while sharing header-box code with the progressive MP4).
#[test]
fn init_segment_bytes_are_stable() {
    let b = init_segment(&synthetic_params(), &meta());
    let fnv = b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
        (h ^ u64::from(x)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    assert_eq!((b.len(), fnv), (726, 1018763475266635503));
}
