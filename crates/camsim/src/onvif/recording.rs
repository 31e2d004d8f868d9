//! ONVIF Profile G on the simulated device: the recordings of mounts with a card
//! ([`crate::card`]), found through the Search service (`GetRecordingSummary`,
//! `FindRecordings` → `GetRecordingSearchResults`, `EndSearch`) and the Recording service
//! (`GetRecordings`), and replayed through the Replay service (`GetReplayUri` → the mount's
//! RTSP URL; the replay itself is RTSP with `Require: onvif-replay`, see `session`).
//!
//! Searches are stateless: every search token lists every recording (a test device holds a
//! handful). Owns no state of its own; the card's coverage is read from the mount.

use crate::MountControl;
use crate::card::{format_xs, now_ms};
use crate::server::ServerHandle;

use super::soap::{child, esc, text};
use super::{Fault, invalid};

/// XML namespace of the Search service.
pub const NS_SEARCH: &str = "http://www.onvif.org/ver10/search/wsdl";
/// XML namespace of the Replay service.
pub const NS_REPLAY: &str = "http://www.onvif.org/ver10/replay/wsdl";
/// XML namespace of the Recording service.
pub const NS_RECORDING: &str = "http://www.onvif.org/ver10/recording/wsdl";

/// One recording of the device: a mount's card.
#[derive(Clone, Debug)]
pub struct OnvifRecording {
    /// Recording token, e.g. `rec-main`.
    pub token: String,
    /// Source (profile) it records.
    pub source: String,
    /// The RTSP URL `GetReplayUri` answers.
    pub replay_uri: String,
    /// The mount whose card holds the footage.
    pub mount: MountControl,
}

impl OnvifRecording {
    /// The recording of camsim mount `mount` of `rtsp` as profile `source` (`None` when the
    /// mount does not exist or has no card).
    pub fn for_mount(source: &str, rtsp: &ServerHandle, mount: &str) -> Option<OnvifRecording> {
        let m = rtsp.mount(mount)?;
        m.card_coverage_ms()?;
        Some(OnvifRecording {
            token: format!("rec-{source}"),
            source: source.to_owned(),
            replay_uri: rtsp.url(mount),
            mount: m,
        })
    }

    fn coverage(&self) -> (i64, i64) {
        self.mount.card_coverage_ms().unwrap_or((0, 0))
    }
}

/// `GET /control/recordings`: `[{"token","mount","from_ms","until_ms","replayed_frames",
/// "replay_sessions"}]`.
pub(super) async fn control(
    axum::extract::State(d): axum::extract::State<std::sync::Arc<super::Device>>,
) -> axum::response::Response {
    use axum::response::IntoResponse;
    let rows: Vec<serde_json::Value> = d
        .config
        .recordings
        .iter()
        .map(|r| {
            let (from, until) = r.coverage();
            let st = r.mount.stats();
            serde_json::json!({
                "token": r.token,
                "mount": r.mount.name(),
                "from_ms": from,
                "until_ms": until,
                "replayed_frames": st.replayed_frames,
                "replay_sessions": st.replay_sessions,
            })
        })
        .collect();
    axum::Json(rows).into_response()
}

/// Answers `op` if it is a Profile G operation (`None`: not one of ours).
pub(super) fn operation(
    recordings: &[OnvifRecording],
    op: &str,
    el: roxmltree::Node<'_, '_>,
) -> Option<Result<String, Fault>> {
    Some(match op {
        "GetRecordingSummary" => {
            let (from, until) = recordings
                .iter()
                .map(OnvifRecording::coverage)
                .reduce(|a, b| (a.0.min(b.0), a.1.max(b.1)))
                .unwrap_or((0, 0));
            Ok(format!(
                r#"<tse:GetRecordingSummaryResponse xmlns:tse="{NS_SEARCH}"><tse:Summary><tt:DataFrom>{}</tt:DataFrom><tt:DataUntil>{}</tt:DataUntil><tt:NumberRecordings>{}</tt:NumberRecordings></tse:Summary></tse:GetRecordingSummaryResponse>"#,
                format_xs(from),
                format_xs(until),
                recordings.len()
            ))
        }
        "FindRecordings" => Ok(format!(
            r#"<tse:FindRecordingsResponse xmlns:tse="{NS_SEARCH}"><tse:SearchToken>all</tse:SearchToken></tse:FindRecordingsResponse>"#
        )),
        "GetRecordingSearchResults" => {
            if text(child(el, "SearchToken")) != "all" {
                return Some(Err(invalid("unknown search token")));
            }
            let mut s = format!(
                r#"<tse:GetRecordingSearchResultsResponse xmlns:tse="{NS_SEARCH}"><tse:ResultList><tt:SearchState>Completed</tt:SearchState>"#
            );
            for r in recordings {
                let (from, until) = r.coverage();
                s.push_str(&format!(
                    "<tt:RecordingInformation><tt:RecordingToken>{t}</tt:RecordingToken><tt:Source><tt:SourceId>{src}</tt:SourceId><tt:Name>{src}</tt:Name><tt:Location>camsim</tt:Location><tt:Description>card</tt:Description><tt:Address>{uri}</tt:Address></tt:Source><tt:EarliestRecording>{a}</tt:EarliestRecording><tt:LatestRecording>{b}</tt:LatestRecording><tt:Content>card</tt:Content><tt:Track><tt:TrackToken>VIDEO001</tt:TrackToken><tt:TrackType>Video</tt:TrackType><tt:Description>video</tt:Description><tt:DataFrom>{a}</tt:DataFrom><tt:DataTo>{b}</tt:DataTo></tt:Track><tt:RecordingStatus>Recording</tt:RecordingStatus></tt:RecordingInformation>",
                    t = esc(&r.token),
                    src = esc(&r.source),
                    uri = esc(&r.replay_uri),
                    a = format_xs(from),
                    b = format_xs(until),
                ));
            }
            s.push_str("</tse:ResultList></tse:GetRecordingSearchResultsResponse>");
            Ok(s)
        }
        "EndSearch" => Ok(format!(
            r#"<tse:EndSearchResponse xmlns:tse="{NS_SEARCH}"><tse:Endpoint>{}</tse:Endpoint></tse:EndSearchResponse>"#,
            format_xs(now_ms())
        )),
        "GetRecordings" => {
            let mut s = format!(r#"<trc:GetRecordingsResponse xmlns:trc="{NS_RECORDING}">"#);
            for r in recordings {
                s.push_str(&format!(
                    "<trc:RecordingItem><tt:RecordingToken>{t}</tt:RecordingToken><tt:Configuration><tt:Source><tt:SourceId>{src}</tt:SourceId><tt:Name>{src}</tt:Name><tt:Location>camsim</tt:Location><tt:Description>card</tt:Description><tt:Address>{uri}</tt:Address></tt:Source><tt:Content>card</tt:Content><tt:MaximumRetentionTime>PT0S</tt:MaximumRetentionTime></tt:Configuration><tt:Tracks><tt:Track><tt:TrackToken>VIDEO001</tt:TrackToken><tt:Configuration><tt:TrackType>Video</tt:TrackType><tt:Description>video</tt:Description></tt:Configuration></tt:Track></tt:Tracks></trc:RecordingItem>",
                    t = esc(&r.token),
                    src = esc(&r.source),
                    uri = esc(&r.replay_uri),
                ));
            }
            s.push_str("</trc:GetRecordingsResponse>");
            Ok(s)
        }
        "GetReplayUri" => {
            let token = text(child(el, "RecordingToken"));
            match recordings.iter().find(|r| r.token == token) {
                Some(r) => Ok(format!(
                    r#"<trp:GetReplayUriResponse xmlns:trp="{NS_REPLAY}"><trp:Uri>{}</trp:Uri></trp:GetReplayUriResponse>"#,
                    esc(&r.replay_uri)
                )),
                None => Err(Fault::Sender(
                    "ter:NoRecording",
                    format!("no recording {token:?}"),
                )),
            }
        }
        _ => return None,
    })
}
