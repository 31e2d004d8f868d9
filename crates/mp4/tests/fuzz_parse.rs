//! Fuzzing of the recovery parser ([`vigie_mp4::parse_segment_bytes`]), which reads segment files
//! at start-up (`Store::open`) and in `vigie reindex`: a crafted file must never panic it, make it
//! allocate beyond a bound proportional to the file, or loop without end.
//!
//! * `regressions_replay`: every input in `tests/fuzz-regressions/` (each one crashed or hung an
//!   earlier parser) is parsed again.
//! * `fuzz_*`: proptest runs of random bytes, structured segments and mutations of valid
//!   segments. The suite runs a few hundred cases each (seconds); the longer run is documented in
//!   docs/FUZZING.md: `PROPTEST_CASES=100000 cargo test -p vigie-mp4 --test fuzz_parse --release`.
//!
//! A counting global allocator refuses any single allocation above [`ALLOC_CAP_BYTES`]: the
//! process then aborts ("memory allocation of N bytes failed"), which fails the run instead of
//! letting a 51 GB request eat the machine. Every case also checks the peak live bytes against
//! a bound linear in the input size.

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

use bytes::Bytes;
use proptest::prelude::*;
use vigie_core::{Codec, VideoParams};
use vigie_mp4::parse::{MAX_FRAGMENTS_PER_SEGMENT, MAX_SAMPLES_PER_FRAGMENT};
use vigie_mp4::{
    ParsedSegment, SampleInfo, SegmentMeta, SegmentTrailer, fragment_header, init_segment,
    parse_segment_bytes, trailer_box,
};

/// Largest single allocation the parser may ask for (its own 16 MiB box cap, plus slack).
const ALLOC_CAP_BYTES: usize = 64 << 20;

struct Counting;

static LIVE: AtomicUsize = AtomicUsize::new(0);
static PEAK: AtomicUsize = AtomicUsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if layout.size() > ALLOC_CAP_BYTES {
            return std::ptr::null_mut();
        }
        let p = unsafe { System.alloc(layout) };
        if !p.is_null() {
            let live = LIVE.fetch_add(layout.size(), Relaxed) + layout.size();
            PEAK.fetch_max(live, Relaxed);
        }
        p
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        unsafe { System.dealloc(ptr, layout) };
        LIVE.fetch_sub(layout.size(), Relaxed);
    }
}

#[global_allocator]
static ALLOC: Counting = Counting;

/// Serialises the cases that measure the peak (tests of this binary run on several threads).
static MEASURE: std::sync::Mutex<()> = std::sync::Mutex::new(());

/// Parses `input` and checks the invariants every result must hold, whatever the input.
fn parse_checked(input: &[u8]) -> ParsedSegment {
    let _g = MEASURE.lock().unwrap_or_else(|p| p.into_inner());
    let before = LIVE.load(Relaxed);
    PEAK.store(before, Relaxed);
    let p = parse_segment_bytes(input);
    let peak = PEAK.load(Relaxed).saturating_sub(before);
    let n = input.len() as u64;
    assert_eq!(p.total_len, n);
    assert!(p.complete_len <= n, "complete_len {} > {n}", p.complete_len);
    // A sample costs at least 4 bytes of trun or 1 byte of mdat; a fragment at least 16 bytes.
    assert!(
        p.frames() as u64 <= n,
        "{} frames from {n} bytes",
        p.frames()
    );
    assert!(p.fragments.len() as u64 <= n / 16 + 1);
    assert!(p.fragments.len() <= MAX_FRAGMENTS_PER_SEGMENT);
    for f in &p.fragments {
        assert!(f.samples.len() <= MAX_SAMPLES_PER_FRAGMENT);
        assert!(f.offset < f.end && f.end <= n);
        let payload: u64 = f.samples.iter().map(|s| u64::from(s.bytes)).sum();
        assert_eq!(f.data_offset + payload, f.end);
    }
    // Memory: box bodies (≤ 16 MiB, one at a time) plus results linear in the input.
    let bound = (17usize << 20) + 64 * input.len();
    assert!(peak <= bound, "parsing {n} bytes peaked at {peak} bytes");
    p
}

fn params() -> VideoParams {
    // A minimal `avc1` sample entry: 8-byte header + 78-byte VisualSampleEntry, no avcC (the
    // parser only reads the box type and the size).
    let mut entry = vec![0u8; 86];
    entry[..4].copy_from_slice(&86u32.to_be_bytes());
    entry[4..8].copy_from_slice(b"avc1");
    entry[8 + 24..8 + 26].copy_from_slice(&320u16.to_be_bytes());
    entry[8 + 26..8 + 28].copy_from_slice(&240u16.to_be_bytes());
    VideoParams {
        codec: Codec::H264,
        rfc6381_codec: "avc1.4d401f".into(),
        width: 320,
        height: 240,
        pixel_aspect_ratio: (1, 1),
        sample_entry: Bytes::from(entry),
    }
}

fn meta() -> SegmentMeta {
    SegmentMeta {
        camera: "cam-1".into(),
        stream: "main".into(),
        segment_id: 42,
        start_90k: 1_795_899_600 * 90_000,
        session_id: 7,
    }
}

/// A valid segment: init, fragments of the given sample sizes, optional trailer.
fn segment(frags: &[Vec<u32>], trailer: bool) -> Vec<u8> {
    let mut f = init_segment(&params(), &meta());
    let mut t = 0u64;
    for (k, sizes) in frags.iter().enumerate() {
        let samples: Vec<SampleInfo> = sizes
            .iter()
            .enumerate()
            .map(|(i, &bytes)| SampleInfo {
                duration_90k: 3600,
                bytes,
                is_key: i == 0,
            })
            .collect();
        f.extend(fragment_header(k as u32 + 1, t, &samples));
        for s in &samples {
            f.extend(std::iter::repeat_n(0x5au8, s.bytes as usize));
        }
        t += 3600 * samples.len() as u64;
    }
    if trailer {
        f.extend(trailer_box(&SegmentTrailer {
            wall_duration_90k: t as i64,
            end_reason: "rotation".into(),
        }));
    }
    f
}

/// A `moof` + empty `mdat` whose `trun` has the given flags, count and body (after the
/// data offset), with a default-base-is-moof `tfhd` carrying `tfhd_extra` default fields.
fn crafted_fragment(tf_flags: u32, tfhd_extra: &[u32], trun_flags: u32, count: u32) -> Vec<u8> {
    fn boxed(fourcc: &[u8; 4], body: &[u8]) -> Vec<u8> {
        let mut v = ((body.len() + 8) as u32).to_be_bytes().to_vec();
        v.extend_from_slice(fourcc);
        v.extend_from_slice(body);
        v
    }
    let mfhd = boxed(b"mfhd", &[0, 0, 0, 0, 0, 0, 0, 1]);
    let mut tfhd_body = tf_flags.to_be_bytes().to_vec();
    tfhd_body.extend_from_slice(&1u32.to_be_bytes());
    for v in tfhd_extra {
        tfhd_body.extend_from_slice(&v.to_be_bytes());
    }
    let tfhd = boxed(b"tfhd", &tfhd_body);
    let mut tfdt_body = vec![1, 0, 0, 0];
    tfdt_body.extend_from_slice(&0u64.to_be_bytes());
    let tfdt = boxed(b"tfdt", &tfdt_body);
    let mut trun_body = trun_flags.to_be_bytes().to_vec();
    trun_body.extend_from_slice(&count.to_be_bytes());
    let data_offset_pos = trun_body.len();
    trun_body.extend_from_slice(&0u32.to_be_bytes());
    let trun_len = trun_body.len() + 8;
    let traf_len = 8 + tfhd.len() + tfdt.len() + trun_len;
    let moof_len = 8 + mfhd.len() + traf_len;
    // data offset: from the moof start to the mdat body.
    trun_body[data_offset_pos..data_offset_pos + 4]
        .copy_from_slice(&((moof_len + 8) as u32).to_be_bytes());
    let trun = boxed(b"trun", &trun_body);
    let traf = boxed(b"traf", &[tfhd, tfdt, trun].concat());
    let mut out = boxed(b"moof", &[mfhd, traf].concat());
    out.extend_from_slice(&boxed(b"mdat", &[]));
    out
}

/// The start-up crash loop of issue 12: a `trun` with flags 0x1 (data offset only: no
/// per-sample field) and 0xFFFFFFFF samples passed the "count × per-sample bytes fits the box"
/// check (0 × anything fits) and asked for 51 GB.
#[test]
fn trun_with_a_huge_count_and_no_sample_fields_is_rejected() {
    let mut f = init_segment(&params(), &meta());
    let init_len = f.len() as u64;
    f.extend(crafted_fragment(0x02_0000, &[], 0x1, u32::MAX));
    let p = parse_checked(&f);
    assert!(p.fragments.is_empty());
    assert_eq!(p.complete_len, init_len);
    let problem = p.problem.unwrap();
    assert!(problem.contains("invalid moof"), "{problem}");
    // Same with a default sample size of 0 (samples of no bytes fit any mdat).
    let mut f = init_segment(&params(), &meta());
    f.extend(crafted_fragment(0x02_0010, &[0], 0x1, u32::MAX));
    assert!(parse_checked(&f).fragments.is_empty());
    // And with a default size whose product overflows or misses the mdat.
    let mut f = init_segment(&params(), &meta());
    f.extend(crafted_fragment(0x02_0010, &[7], 0x1, u32::MAX));
    assert!(parse_checked(&f).fragments.is_empty());
}

/// Default sample sizes (no per-sample size field) are still read when they fill the mdat.
#[test]
fn default_sample_sizes_that_fill_the_mdat_are_accepted() {
    let mut f = init_segment(&params(), &meta());
    let mut frag = crafted_fragment(0x02_0018, &[3600, 10], 0x1, 3);
    // Grow the empty mdat to 30 bytes.
    let n = frag.len();
    frag[n - 8..n - 4].copy_from_slice(&38u32.to_be_bytes());
    frag.extend_from_slice(&[0u8; 30]);
    f.extend(frag);
    let p = parse_checked(&f);
    assert!(p.is_clean(), "{:?}", p.problem);
    assert_eq!(p.frames(), 3);
    assert_eq!(p.fragments[0].samples[2].bytes, 10);
}

fn regressions_dir() -> std::path::PathBuf {
    std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fuzz-regressions")
}

/// Every input kept in `tests/fuzz-regressions/` parses within the bounds.
#[test]
fn regressions_replay() {
    let mut n = 0;
    for e in std::fs::read_dir(regressions_dir()).unwrap() {
        let path = e.unwrap().path();
        if path.extension().is_some_and(|x| x == "bin") {
            let data = std::fs::read(&path).unwrap();
            let p = parse_checked(&data);
            assert!(p.fragments.is_empty() || p.problem.is_none() || p.complete_len <= p.total_len);
            n += 1;
        }
    }
    assert!(n >= 1, "no regression input found");
}

/// Writes the crafted inputs of this file to the regressions directory (run once with
/// `VIGIE_WRITE_FUZZ_REGRESSIONS=1`; the files are committed).
#[test]
fn write_regressions_when_asked() {
    if std::env::var_os("VIGIE_WRITE_FUZZ_REGRESSIONS").is_none() {
        return;
    }
    let mut f = init_segment(&params(), &meta());
    f.extend(crafted_fragment(0x02_0000, &[], 0x1, u32::MAX));
    std::fs::write(
        regressions_dir().join("trun-count-ffffffff-flags-1.bin"),
        &f,
    )
    .unwrap();
    let mut f = init_segment(&params(), &meta());
    f.extend(crafted_fragment(0x02_0010, &[0], 0x1, u32::MAX));
    std::fs::write(
        regressions_dir().join("trun-count-ffffffff-default-size-0.bin"),
        &f,
    )
    .unwrap();
}

fn valid_segment() -> impl Strategy<Value = Vec<u8>> {
    (
        prop::collection::vec(prop::collection::vec(1u32..400, 0..12), 0..5),
        any::<bool>(),
    )
        .prop_map(|(frags, trailer)| segment(&frags, trailer))
}

/// One edit of a byte buffer.
#[derive(Clone, Debug)]
enum Mutation {
    /// Overwrite one byte.
    Byte(usize, u8),
    /// Overwrite a big-endian u32 (box sizes, counts, flags) with an interesting value.
    Word(usize, u32),
    /// Cut the buffer.
    Truncate(usize),
    /// Insert bytes.
    Insert(usize, Vec<u8>),
    /// Duplicate a range at its end (repeated boxes).
    Repeat(usize, usize),
}

fn mutation() -> impl Strategy<Value = Mutation> {
    let word = prop_oneof![
        Just(0u32),
        Just(1),
        Just(8),
        Just(16),
        Just(0x7fff_ffff),
        Just(0x8000_0000),
        Just(u32::MAX),
        Just(u32::MAX - 7),
        any::<u32>(),
    ];
    prop_oneof![
        (any::<usize>(), any::<u8>()).prop_map(|(i, b)| Mutation::Byte(i, b)),
        (any::<usize>(), word).prop_map(|(i, w)| Mutation::Word(i, w)),
        any::<usize>().prop_map(Mutation::Truncate),
        (any::<usize>(), prop::collection::vec(any::<u8>(), 1..32))
            .prop_map(|(i, v)| Mutation::Insert(i, v)),
        (any::<usize>(), 1usize..200).prop_map(|(i, n)| Mutation::Repeat(i, n)),
    ]
}

fn apply(buf: &mut Vec<u8>, m: &Mutation) {
    if buf.is_empty() {
        return;
    }
    let at = |i: usize| i % buf.len();
    match m {
        Mutation::Byte(i, b) => {
            let i = at(*i);
            buf[i] = *b;
        }
        Mutation::Word(i, w) => {
            let i = at(*i).min(buf.len().saturating_sub(4));
            let n = buf.len().min(i + 4) - i;
            buf[i..i + n].copy_from_slice(&w.to_be_bytes()[..n]);
        }
        Mutation::Truncate(i) => {
            let i = at(*i);
            buf.truncate(i);
        }
        Mutation::Insert(i, v) => {
            let i = at(*i);
            buf.splice(i..i, v.iter().copied());
        }
        Mutation::Repeat(i, n) => {
            let i = at(*i);
            let end = (i + n).min(buf.len());
            let copy = buf[i..end].to_vec();
            buf.extend_from_slice(&copy);
        }
    }
}

/// Box-shaped random input: a sequence of boxes with random (often known) types and random,
/// sometimes lying, sizes.
fn boxes() -> impl Strategy<Value = Vec<u8>> {
    let fourcc = prop_oneof![
        Just(*b"ftyp"),
        Just(*b"moov"),
        Just(*b"moof"),
        Just(*b"mdat"),
        Just(*b"uuid"),
        Just(*b"free"),
        Just(*b"trak"),
        Just(*b"traf"),
        Just(*b"trun"),
        any::<[u8; 4]>(),
    ];
    prop::collection::vec(
        (
            fourcc,
            prop_oneof![Just(None), any::<u32>().prop_map(Some)],
            prop::collection::vec(any::<u8>(), 0..64),
        ),
        0..12,
    )
    .prop_map(|bs| {
        let mut out = Vec::new();
        for (fourcc, size, body) in bs {
            let size = size.unwrap_or((body.len() + 8) as u32);
            out.extend_from_slice(&size.to_be_bytes());
            out.extend_from_slice(&fourcc);
            out.extend_from_slice(&body);
        }
        out
    })
}

fn config() -> ProptestConfig {
    // PROPTEST_CASES in the environment overrides this (see docs/FUZZING.md).
    ProptestConfig {
        cases: std::env::var("PROPTEST_CASES")
            .ok()
            .and_then(|v| v.parse().ok())
            .unwrap_or(256),
        failure_persistence: None,
        ..ProptestConfig::default()
    }
}

proptest! {
    #![proptest_config(config())]

    #[test]
    fn fuzz_random_bytes(data in prop::collection::vec(any::<u8>(), 0..2048)) {
        parse_checked(&data);
    }

    #[test]
    fn fuzz_random_boxes(data in boxes()) {
        parse_checked(&data);
        // Behind a valid init segment, so fragments are looked at.
        let mut f = init_segment(&params(), &meta());
        f.extend_from_slice(&data);
        parse_checked(&f);
    }

    #[test]
    fn fuzz_mutated_segments(
        seg in valid_segment(),
        muts in prop::collection::vec(mutation(), 1..6),
    ) {
        let clean = parse_checked(&seg);
        prop_assert!(clean.is_clean(), "{:?}", clean.problem);
        let mut buf = seg;
        for m in &muts {
            apply(&mut buf, m);
        }
        parse_checked(&buf);
    }

    #[test]
    fn fuzz_crafted_truns(
        tf_flags in prop_oneof![Just(0x02_0000u32), Just(0x02_0008), Just(0x02_0010),
            Just(0x02_0018), Just(0x02_0038), any::<u32>()],
        extra in prop::collection::vec(any::<u32>(), 0..4),
        trun_flags in prop_oneof![Just(0x1u32), Just(0x5), Just(0x101), Just(0x201),
            Just(0x701), Just(0xf01), any::<u32>()],
        count in prop_oneof![Just(u32::MAX), Just(0x4000_0000), Just(1 << 20), 0u32..64,
            any::<u32>()],
    ) {
        let mut f = init_segment(&params(), &meta());
        f.extend(crafted_fragment(tf_flags, &extra, trun_flags, count));
        parse_checked(&f);
    }
}
