//! `vigie reindex`: wipe the index and rebuild it from the segment files alone (each file carries
//! its camera, stream, id, wall-clock start, codec parameters and, once closed, its wall duration
//! and end reason). The deletion journal is lost with the index; everything else comes back
//! identical.

use crate::index::Index;
use crate::layout::{Layout, file_name, read_dir_sorted};
use crate::recovery::{FileOutcome, index_file};
use crate::{ReindexReport, StoreConfig, StoreError};

pub(crate) fn reindex(cfg: &StoreConfig) -> Result<ReindexReport, StoreError> {
    let layout = Layout::new(&cfg.data_dir);
    let dir = layout.index_dir();
    if dir.exists() {
        std::fs::remove_dir_all(&dir).map_err(StoreError::io("removing", &dir))?;
    }
    let index = Index::open_with_cache(&dir, cfg.index_cache_bytes)?;
    let mut r = ReindexReport::default();
    let mut max_id = 0;
    for (key, sdir) in layout
        .list_stream_dirs()
        .map_err(StoreError::io("listing", &layout.recordings_dir()))?
    {
        let _span =
            tracing::info_span!("reindex", camera = %key.camera, stream = %key.stream).entered();
        for date_dir in read_dir_sorted(&sdir).map_err(StoreError::io("listing", &sdir))? {
            if !date_dir.is_dir() {
                continue;
            }
            for path in read_dir_sorted(&date_dir).map_err(StoreError::io("listing", &date_dir))? {
                let Some(id) = file_name(&path)
                    .as_deref()
                    .and_then(Layout::parse_segment_file_name)
                else {
                    r.problems
                        .push(format!("{}: not a segment file name", path.display()));
                    continue;
                };
                match index_file(&index, &layout, &key, &path) {
                    Ok(FileOutcome::Indexed { repaired, .. }) => {
                        max_id = max_id.max(id);
                        r.files_indexed += 1;
                        r.files_repaired += u64::from(repaired);
                    }
                    Ok(FileOutcome::Deleted) => r.files_deleted += 1,
                    Ok(FileOutcome::Problem(p)) => r.problems.push(p),
                    Err(e) => r.problems.push(e.to_string()),
                }
            }
        }
    }
    index.set_next_segment_id(max_id + 1)?;
    index.db.flush()?;
    tracing::info!(?r, "reindex done");
    Ok(r)
}
