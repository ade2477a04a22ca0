/**
 * Helpers `@x/staging` shares with `@x/core` so that each has one home:
 * rendering a bad argument for a `TypeError`, checking a path argument, and
 * creating missing directories with their real error. For `@x/staging`
 * only: not part of the public API and not covered by semver.
 * @internal
 * @packageDocumentation
 */
export { makeDirs } from './internal/dirs.js';
export { checkPath, show } from './internal/options.js';
