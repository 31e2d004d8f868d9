//! The landing page: a small status page listing cameras (the full operator UI comes later).

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html(include_str!("../../../../web/index.html"))
}

/// `/live.html?camera=C&stream=S`: plays a stream's live WebSocket with Media Source Extensions
/// (for operators, and the headless-browser test).
pub async fn live_page() -> Html<&'static str> {
    Html(include_str!("../../../../web/live.html"))
}
