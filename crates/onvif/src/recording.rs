//! ONVIF Profile G on a [`Device`]: the recordings a camera holds on its own storage (SD card),
//! found with the Search service (`FindRecordings` → `GetRecordingSearchResults` →
//! `EndSearch`), and the RTSP URI to replay one (`GetReplayUri`, Replay service). The services'
//! addresses come from `GetServices` (namespaces `ver10/search` and `ver10/replay`); a camera
//! that lists none gets [`OnvifError::NotSupported`].
//!
//! The replay itself is RTSP (`Require: onvif-replay`, `Range: clock=START-END`): not here (the
//! recorder's ingest does it). Owns nothing else.

use std::time::Duration;

use crate::device::Device;
use crate::error::{OnvifError, Result};
use crate::soap::{child, children, esc, find, text, with_body};

const NS_SEARCH: &str = "http://www.onvif.org/ver10/search/wsdl";
const NS_REPLAY: &str = "http://www.onvif.org/ver10/replay/wsdl";
/// Result pages asked for before giving up on a search that never completes.
const MAX_RESULT_PAGES: usize = 20;

/// Addresses of the Profile G services of a device.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ProfileGServices {
    /// Search service.
    pub search: Option<String>,
    /// Replay service.
    pub replay: Option<String>,
}

/// One recording held by the camera.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Recording {
    /// Recording token (what `GetReplayUri` takes).
    pub token: String,
    /// The source it records (`SourceId`, often a profile or video source token).
    pub source_id: String,
    /// Oldest footage held (`None` when the camera does not say).
    pub earliest: Option<jiff::Timestamp>,
    /// Newest footage held.
    pub latest: Option<jiff::Timestamp>,
}

impl Recording {
    /// Whether the recording holds `[start, end)` entirely (as far as its earliest/latest say).
    pub fn covers(&self, start: jiff::Timestamp, end: jiff::Timestamp) -> bool {
        self.earliest.is_some_and(|a| a <= start) && self.latest.is_some_and(|b| b >= end)
    }

    /// The part of `[start, end)` it holds, if any.
    pub fn overlap(
        &self,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    ) -> Option<(jiff::Timestamp, jiff::Timestamp)> {
        let a = self.earliest?.max(start);
        let b = self.latest?.min(end);
        (a < b).then_some((a, b))
    }
}

fn parse_time(s: &str) -> Option<jiff::Timestamp> {
    s.trim().parse::<jiff::Timestamp>().ok()
}

impl Device {
    /// `GetServices` → the Search and Replay service addresses.
    pub async fn profile_g_services(&self) -> Result<ProfileGServices> {
        const OP: &str = "GetServices";
        let url = self.services().device.clone();
        let a = self
            .call(
                OP,
                &url,
                "<tds:GetServices><tds:IncludeCapability>false</tds:IncludeCapability></tds:GetServices>",
            )
            .await?;
        with_body(OP, &url, &a, |b| {
            let r = child(b, "GetServicesResponse").ok_or("no GetServicesResponse")?;
            let mut out = ProfileGServices::default();
            for s in children(r, "Service") {
                let ns = text(child(s, "Namespace"));
                let xaddr = text(child(s, "XAddr"));
                if xaddr.is_empty() {
                    continue;
                }
                if ns == NS_SEARCH {
                    out.search = Some(xaddr);
                } else if ns == NS_REPLAY {
                    out.replay = Some(xaddr);
                }
            }
            Ok(out)
        })
    }

    fn need(
        &self,
        op: &'static str,
        addr: Option<String>,
        service: &'static str,
    ) -> Result<String> {
        addr.ok_or_else(|| OnvifError::NotSupported {
            op,
            url: self.url().to_owned(),
            service,
        })
    }

    /// Every recording the camera holds (`FindRecordings` with an empty scope, then its results
    /// page by page, then `EndSearch`).
    pub async fn recordings(&self) -> Result<Vec<Recording>> {
        const OP: &str = "FindRecordings";
        let svc = self.profile_g_services().await?;
        let url = self.need(OP, svc.search, "search")?;
        let a = self
            .call(
                OP,
                &url,
                &format!("<tse:FindRecordings xmlns:tse=\"{NS_SEARCH}\"><tse:Scope/><tse:MaxMatches>100</tse:MaxMatches><tse:KeepAliveTime>PT10S</tse:KeepAliveTime></tse:FindRecordings>"),
            )
            .await?;
        let token = with_body(OP, &url, &a, |b| {
            let t = text(find(b, "SearchToken"));
            if t.is_empty() {
                Err("no SearchToken".to_owned())
            } else {
                Ok(t)
            }
        })?;
        let mut out = Vec::new();
        let mut completed = false;
        for _ in 0..MAX_RESULT_PAGES {
            const OP: &str = "GetRecordingSearchResults";
            let body = format!(
                "<tse:GetRecordingSearchResults xmlns:tse=\"http://www.onvif.org/ver10/search/wsdl\"><tse:SearchToken>{}</tse:SearchToken><tse:MinResults>1</tse:MinResults><tse:MaxResults>100</tse:MaxResults><tse:WaitTime>PT2S</tse:WaitTime></tse:GetRecordingSearchResults>",
                esc(&token)
            );
            let a = self.call(OP, &url, &body).await?;
            let (page, done) = with_body(OP, &url, &a, |b| {
                let list = find(b, "ResultList").ok_or("no ResultList")?;
                let state = text(child(list, "SearchState"));
                let mut page = Vec::new();
                for info in children(list, "RecordingInformation") {
                    let token = text(child(info, "RecordingToken"));
                    if token.is_empty() {
                        return Err("a recording has no RecordingToken".into());
                    }
                    page.push(Recording {
                        token,
                        source_id: text(child(info, "Source").and_then(|s| child(s, "SourceId"))),
                        earliest: parse_time(&text(child(info, "EarliestRecording"))),
                        latest: parse_time(&text(child(info, "LatestRecording"))),
                    });
                }
                Ok((page, state == "Completed" || state.is_empty()))
            })?;
            out.extend(page);
            if out.len() > 10_000 {
                return Err(OnvifError::Malformed {
                    op: OP,
                    url,
                    reason: "more than 10000 recordings".into(),
                });
            }
            if done {
                completed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        // Releases the search on the camera; a failure here changes nothing we know.
        let _ = self
            .call(
                "EndSearch",
                &url,
                &format!(
                    "<tse:EndSearch xmlns:tse=\"http://www.onvif.org/ver10/search/wsdl\"><tse:SearchToken>{}</tse:SearchToken></tse:EndSearch>",
                    esc(&token)
                ),
            )
            .await;
        if !completed {
            return Err(OnvifError::Malformed {
                op: "GetRecordingSearchResults",
                url,
                reason: format!("the search did not complete after {MAX_RESULT_PAGES} pages"),
            });
        }
        Ok(out)
    }

    /// The recordings holding some of `[start, end)`, the one holding most first.
    pub async fn recordings_covering(
        &self,
        start: jiff::Timestamp,
        end: jiff::Timestamp,
    ) -> Result<Vec<Recording>> {
        let mut v: Vec<(jiff::SignedDuration, Recording)> = self
            .recordings()
            .await?
            .into_iter()
            .filter_map(|r| r.overlap(start, end).map(|(a, b)| (b.duration_since(a), r)))
            .collect();
        v.sort_by_key(|(d, _)| std::cmp::Reverse(*d));
        Ok(v.into_iter().map(|(_, r)| r).collect())
    }

    /// `GetReplayUri` of `recording` (RTP over RTSP over TCP, unicast): an `rtsp://` URI.
    pub async fn replay_uri(&self, recording: &str) -> Result<String> {
        const OP: &str = "GetReplayUri";
        let svc = self.profile_g_services().await?;
        let url = self.need(OP, svc.replay, "replay")?;
        let body = format!(
            "<trp:GetReplayUri xmlns:trp=\"{NS_REPLAY}\"><trp:StreamSetup><tt:Stream>RTP-Unicast</tt:Stream><tt:Transport><tt:Protocol>RTSP</tt:Protocol></tt:Transport></trp:StreamSetup><trp:RecordingToken>{}</trp:RecordingToken></trp:GetReplayUri>",
            esc(recording)
        );
        let a = self.call(OP, &url, &body).await?;
        with_body(OP, &url, &a, |b| {
            let uri = text(find(b, "GetReplayUriResponse").and_then(|r| child(r, "Uri")));
            if uri.is_empty() {
                return Err("no Uri".into());
            }
            if !uri.starts_with("rtsp://") && !uri.starts_with("rtsps://") {
                return Err(format!("the replay URI {uri:?} is not rtsp://"));
            }
            Ok(uri)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overlap_and_cover() {
        let t = |s: &str| s.parse::<jiff::Timestamp>().unwrap();
        let r = Recording {
            token: "r".into(),
            source_id: "s".into(),
            earliest: Some(t("2026-12-04T10:00:00Z")),
            latest: Some(t("2026-12-04T11:00:00Z")),
        };
        assert!(r.covers(t("2026-12-04T10:10:00Z"), t("2026-12-04T10:20:00Z")));
        assert!(!r.covers(t("2026-12-04T09:10:00Z"), t("2026-12-04T10:20:00Z")));
        assert_eq!(
            r.overlap(t("2026-12-04T09:10:00Z"), t("2026-12-04T10:20:00Z")),
            Some((t("2026-12-04T10:00:00Z"), t("2026-12-04T10:20:00Z")))
        );
        assert_eq!(
            r.overlap(t("2026-12-04T12:00:00Z"), t("2026-12-04T13:00:00Z")),
            None
        );
        let unknown = Recording {
            earliest: None,
            ..r
        };
        assert_eq!(
            unknown.overlap(t("2026-12-04T10:10:00Z"), t("2026-12-04T10:20:00Z")),
            None
        );
    }
}
