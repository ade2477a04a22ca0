/**
 * Test hooks for forcing interleavings; not part of the public API and not
 * covered by semver.
 * @internal
 */
export { hooks } from './internal/hooks.js';
