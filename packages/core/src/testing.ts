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
 * Makes each kernel wait pause `ns` nanoseconds (0 turns it off). `'wait'`:
 * between its last cancel check and the blocking call, where a cancel signal
 * is lost and only its re-sending ends the wait. `'check'`: after the grant,
 * at the start of the check and record on the wait's thread; a signal that
 * cuts this pause short fails the check with EINTR, as a check's system call
 * on some filesystems (FUSE) would.
 * @internal
 */
export function setWaitTestGap(ns: number, where: 'wait' | 'check' = 'wait'): void {
  addon?.setWaitTestGap(ns, where === 'wait' ? 0 : 1);
}

/**
 * Makes the kernel addon's lease release pause `ns` nanoseconds (0 turns it
 * off) between its check that the lease file is ours and the rename that
 * moves it aside, blocking the calling thread.
 * @internal
 */
export function setLeaseReleaseTestGap(ns: number): void {
  addon?.setWaitTestGap(ns, 2);
}
