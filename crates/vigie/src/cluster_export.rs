//! Exports across nodes (issue 15 item 5, docs/CLUSTER.md "Exports across nodes"): the
//! [`RangeSource`] of a clustered node, over [`ClusterFootage`]. An export job asks it for the
//! range of each stream: when only this node holds footage of it, the job plans it in the store
//! as on a single node; otherwise the range is laid out as for `video.mp4` (one copy per
//! instant, each stretch planned by its holder, one edit list), every piece's tables are loaded
//! (the manifest counts the frames), and the master's parts held elsewhere are read from their
//! holders with signed `Range` requests carrying the requesting user (each holder journals what
//! it served).
//!
//! Unlike `video.mp4`, gaps (nothing recorded) never refuse an export: they are listed in the
//! manifest. Footage only an unreachable node holds fails the job (naming the node) unless the
//! request allowed it (`"unavailable": "skip"`), then it is listed in the manifest.
//!
//! Does not own: the layout across nodes ([`crate::cluster_footage`]), the job, manifest and
//! package (vigie-export), the admission (vigie-api).

use std::sync::Arc;

use bytes::Bytes;
use vigie_export::MasterReader;
use vigie_export::jobs::{
    NodesPlan, RangeError, RangePlan, RangeRequest, RangeSource, UnavailablePart,
};
use vigie_footage::{FootageError, PlaybackRequest};
use vigie_mp4::progressive::VirtualMp4;
use vigie_service::Footage;
use vigie_store::GapPolicy;

use crate::cluster_footage::{ClusterFootage, Layout, LayoutOptions};

/// The export jobs' view of the cluster's footage.
pub struct ClusterRanges(pub Arc<ClusterFootage>);

impl MasterReader for ClusterRanges {
    fn read(
        &self,
        mp4: &VirtualMp4,
        start: u64,
        end: u64,
        send: &mut dyn FnMut(Bytes) -> bool,
    ) -> std::io::Result<()> {
        self.0.read(mp4, start, end, send)
    }
}

impl RangeSource for ClusterRanges {
    fn plan(&self, req: &RangeRequest) -> Result<RangePlan, RangeError> {
        let _span =
            tracing::info_span!("export_range", camera = %req.key.camera, stream = %req.key.stream)
                .entered();
        let playback = PlaybackRequest {
            key: req.key.clone(),
            start: req.start,
            end: req.end,
            // Gaps (nothing recorded) are listed in the manifest, never refused.
            gaps: GapPolicy::Skip,
            subtitles: req.subtitles.clone(),
            on_behalf: req.on_behalf.clone(),
        };
        let opts = LayoutOptions {
            refuse_unavailable: !req.skip_unavailable,
            export: true,
        };
        let laid = match self.0.layout(&playback, opts) {
            Ok(Layout::Local) | Ok(Layout::Cached(_)) => {
                return Ok(RangePlan::Local {
                    node: self.0.node().to_owned(),
                });
            }
            Ok(Layout::Laid(l)) => *l,
            Err(FootageError::Conflict { message, .. }) => {
                // The layout's advice is `video.mp4`'s; an export's request says it otherwise.
                return Err(RangeError::Unavailable(
                    message.replace("pass gaps=skip", "ask with \"unavailable\": \"skip\""),
                ));
            }
            Err(e) => return Err(RangeError::Failed(e.to_string())),
        };
        let mut input = laid.input.materialise(&*laid.source).map_err(|e| {
            RangeError::Unavailable(format!("reading the sample tables of the range: {e}"))
        })?;
        input.files = laid.mp4.files.clone();
        let unavailable = laid
            .missing
            .into_iter()
            .map(|(node, start, end, reason)| UnavailablePart {
                node,
                start,
                end,
                reason,
            })
            .collect();
        tracing::info!(stretches = ?laid.stretches.iter().map(|s| s.0.as_str()).collect::<Vec<_>>(), remote = laid.remote, "export range laid out across nodes");
        Ok(RangePlan::Nodes(Box::new(NodesPlan {
            mp4: laid.mp4,
            input,
            spans: laid.spans,
            codecs: laid.codecs,
            recorders: laid.stretches,
            unavailable,
            remote: laid.remote,
        })))
    }
}
