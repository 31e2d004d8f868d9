//! A small signed package for the verification tests and the fuzz harness.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use vigie_export::manifest::*;
use vigie_export::{InstallationKey, PackageSpec, write_package};
use vigie_mp4::SampleInfo;
use vigie_mp4::progressive::{Chunk, Input, build};

pub const MP4: &str = "cam_main_20261128T210000Z_20261128T210006Z.mp4";

fn instant(s: &str) -> Instant {
    Instant {
        utc: s.into(),
        local: s.into(),
    }
}

pub fn manifest() -> Manifest {
    let range = Range {
        start: instant("2026-11-28T21:00:00Z"),
        end: instant("2026-11-28T21:00:06Z"),
        duration_s: 6.0,
    };
    Manifest {
        format: vigie_export::FORMAT.into(),
        export_id: "20261128T220000Z-00000001".into(),
        software: Software {
            name: "Vigie".into(),
            version: "test".into(),
        },
        exported_at: instant("2026-11-28T22:00:00Z"),
        operator: "alice".into(),
        requester: "OPJ Martin".into(),
        procedure: "2026/0042".into(),
        reason: "réquisition".into(),
        camera: CameraInfo {
            id: "cam".into(),
            name: "Gare".into(),
            commune: CommuneInfo {
                id: "c".into(),
                name: "Commune".into(),
                authorisation: None,
                authorisation_expires: None,
            },
        },
        stream: "main".into(),
        timezone: "Europe/Paris".into(),
        requested: range.clone(),
        actual: range.clone(),
        recorded_spans: vec![range],
        gaps: vec![],
        video: VideoInfo {
            file: MP4.into(),
            processing: "stream copy".into(),
            codec: "avc1.42c01e".into(),
            width: 640,
            height: 360,
            frames: 10,
            duration_s: 0.4,
            timestamp_track: false,
        },
        recorders: vec![],
        unavailable: vec![],
        files: vec![],
        signature: SignatureInfo::default(),
    }
}

/// Writes a valid package of a tiny virtual MP4 into `dir`; returns its path.
pub fn package(dir: &Path, key: &InstallationKey) -> PathBuf {
    let seg = dir.join("segment.bin");
    let data: Vec<u8> = (0..1000u32).map(|i| (i % 251) as u8).collect();
    std::fs::write(&seg, &data).unwrap();
    let input = Input {
        sample_entries: vec![bytes::Bytes::from_static(b"\0\0\0\x08avc1")],
        width: 640,
        height: 360,
        files: vec![seg],
        samples: (0..10)
            .map(|i| SampleInfo {
                duration_90k: 3600,
                bytes: 100,
                is_key: i == 0,
            })
            .collect(),
        chunks: vec![Chunk {
            file: 0,
            offset: 0,
            first_sample: 0,
            samples: 10,
            description: 0,
        }],
        skip_90k: 0,
        duration_90k: 36_000,
        cues: vec![],
    };
    let mp4 = build(&input).unwrap();
    let out = dir.join("package.zip");
    write_package(
        &out,
        PackageSpec {
            manifest: manifest(),
            mp4: &mp4,
            extra: vec![],
            reader: None,
        },
        key,
        &mut |_, _| {},
    )
    .unwrap();
    out
}

/// The (name, bytes) entries of a zip, in order.
pub fn entries(path: &Path) -> Vec<(String, Vec<u8>)> {
    let mut z = zip::ZipArchive::new(std::fs::File::open(path).unwrap()).unwrap();
    (0..z.len())
        .map(|i| {
            let mut f = z.by_index(i).unwrap();
            let mut v = Vec::new();
            f.read_to_end(&mut v).unwrap();
            (f.name().to_owned(), v)
        })
        .collect()
}

/// A zip of these entries. Names are written through placeholders of the same length and
/// patched afterwards, so duplicate and unsafe names get past the writer's own checks.
pub fn write_zip(entries: &[(Vec<u8>, Vec<u8>)]) -> Vec<u8> {
    let mut w = zip::ZipWriter::new(std::io::Cursor::new(Vec::new()));
    let placeholder = |i: usize, len: usize| -> Vec<u8> {
        let tag = format!("\u{1}{i:06}\u{2}");
        let mut p = tag.into_bytes();
        p.resize(len.max(8), b'_');
        p
    };
    let mut patches = Vec::new();
    for (i, (name, data)) in entries.iter().enumerate() {
        let p = placeholder(i, name.len());
        let p_str = String::from_utf8(p.clone()).unwrap();
        w.start_file(p_str, zip::write::SimpleFileOptions::default())
            .unwrap();
        w.write_all(data).unwrap();
        patches.push((p, name.clone()));
    }
    let mut bytes = w.finish().unwrap().into_inner();
    for (p, name) in patches {
        if p.len() != name.len() {
            // Names shorter than 8 bytes keep their placeholder (still unique, still odd).
            continue;
        }
        let mut i = 0;
        while i + p.len() <= bytes.len() {
            if bytes[i..i + p.len()] == p[..] {
                bytes[i..i + p.len()].copy_from_slice(&name);
                i += p.len();
            } else {
                i += 1;
            }
        }
    }
    bytes
}
