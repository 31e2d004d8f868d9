// Test hooks OFF (served as /assets/hooks.js by a normal build): the page keeps its state to
// itself; nothing is published on `window`.
export const hooks = {};
export function expose() {}
