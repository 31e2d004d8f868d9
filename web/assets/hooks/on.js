// Test hooks ON (served as /assets/hooks.js by a server built with the `ui-test-hooks` feature,
// which `--all-features` and so the e2e tests enable): views of page state (and the seek/zoom
// the page itself offers) published on `window` for the UI e2e tests
// (crates/vigie/tests/e2e/ui.rs, live.rs). They hold only what the page's own script holds.
export const hooks = (window.vigie = window.vigie || {});
export function expose(name, value) { window[name] = value; }
