//! The operator web UI (single-page app, `web/index.html` + `web/assets/*`) and the minimal
//! live player page. Everything is embedded in the binary at build time (no Node, no build
//! step): the pages and assets hold no footage and are public; the API calls they make are not.

use axum::extract::Path;
use axum::http::{HeaderValue, header};
use axum::response::{Html, IntoResponse, Response};

use crate::ApiError;

pub async fn page() -> Response {
    let mut r = Html(include_str!("../../../../web/index.html")).into_response();
    r.headers_mut()
        .insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    r
}

/// `/live.html?camera=C&stream=S`: plays a stream's live WebSocket with Media Source Extensions
/// (for operators, and the headless-browser test).
pub async fn live_page() -> Html<&'static str> {
    Html(include_str!("../../../../web/live.html"))
}

/// The UI's test hooks: page state published on `window` only by builds with the
/// `ui-test-hooks` feature (the e2e tests); a normal build serves the inert version.
const HOOKS_ON_JS: &str = include_str!("../../../../web/assets/hooks/on.js");
const HOOKS_OFF_JS: &str = include_str!("../../../../web/assets/hooks/off.js");
const HOOKS_JS: &str = if cfg!(feature = "ui-test-hooks") {
    HOOKS_ON_JS
} else {
    HOOKS_OFF_JS
};

/// The UI's static files: (name, content type, body).
const ASSETS: &[(&str, &str, &str)] = &[
    ("hooks.js", JS, HOOKS_JS),
    ("app.js", JS, include_str!("../../../../web/assets/app.js")),
    ("api.js", JS, include_str!("../../../../web/assets/api.js")),
    (
        "i18n.js",
        JS,
        include_str!("../../../../web/assets/i18n.js"),
    ),
    (
        "time.js",
        JS,
        include_str!("../../../../web/assets/time.js"),
    ),
    ("ui.js", JS, include_str!("../../../../web/assets/ui.js")),
    ("ptz.js", JS, include_str!("../../../../web/assets/ptz.js")),
    (
        "live.js",
        JS,
        include_str!("../../../../web/assets/live.js"),
    ),
    (
        "timeline.js",
        JS,
        include_str!("../../../../web/assets/timeline.js"),
    ),
    (
        "playback.js",
        JS,
        include_str!("../../../../web/assets/playback.js"),
    ),
    (
        "admin.js",
        JS,
        include_str!("../../../../web/assets/admin.js"),
    ),
    (
        "live-page.js",
        JS,
        include_str!("../../../../web/assets/live-page.js"),
    ),
    (
        "live-page.css",
        "text/css; charset=utf-8",
        include_str!("../../../../web/assets/live-page.css"),
    ),
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../../../web/assets/style.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("../../../../web/assets/favicon.svg"),
    ),
];
const JS: &str = "text/javascript; charset=utf-8";

/// `/assets/{file}`.
pub async fn asset(Path(file): Path<String>) -> Result<Response, ApiError> {
    let (_, mime, body) = ASSETS
        .iter()
        .find(|(name, _, _)| *name == file)
        .ok_or_else(|| ApiError::NotFound(format!("no asset {file:?}")))?;
    let mut r = (*body).into_response();
    let h = r.headers_mut();
    h.insert(header::CONTENT_TYPE, HeaderValue::from_static(mime));
    // Revalidated on every load: a new binary serves new files at once.
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    Ok(r)
}

#[cfg(test)]
mod hooks_tests {
    /// A normal build publishes nothing on `window`; only the test build does.
    #[test]
    fn test_hooks_are_inert_without_the_feature() {
        let code = |s: &str| -> String {
            s.lines()
                .filter(|l| !l.trim_start().starts_with("//"))
                .collect()
        };
        assert!(!code(super::HOOKS_OFF_JS).contains("window"));
        assert!(code(super::HOOKS_ON_JS).contains("window.vigie"));
        assert_eq!(
            super::HOOKS_JS == super::HOOKS_ON_JS,
            cfg!(feature = "ui-test-hooks")
        );
    }
}
