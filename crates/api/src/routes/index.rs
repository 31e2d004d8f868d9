//! The landing page: a small status page listing cameras (the full operator UI comes later).

use axum::response::Html;

pub async fn page() -> Html<&'static str> {
    Html(include_str!("../../../../web/index.html"))
}
