/**
 * Test hooks for forcing interleavings; not part of the public API and not
 * covered by semver.
 * @internal
 */
export { hooks } from './internal/hooks.js';

import { addon } from './platform/native.js';

/**
 * Asks the kernel backend's idle wait threads to exit now; returns how many
 * wait threads are still running (busy ones, and idle ones on their way out).
 * @internal
 */
export function trimWaitThreads(): number {
  return addon ? addon.trimWaitThreads() : 0;
}

/**
 * Makes each kernel wait pause `ns` nanoseconds between its last cancel check
 * and the blocking call: a cancel signal landing there is lost, and only its
 * re-sending ends the wait. 0 turns it off.
 * @internal
 */
export function setWaitTestGap(ns: number): void {
  addon?.setWaitTestGap(ns);
}
