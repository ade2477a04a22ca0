/**
 * The conformance suite is written once and run for every backend named in
 * `XLOCK_BACKENDS` (default `kernel,flock,lease`): `describeBackend(backend, fn)`
 * declares one `describe` block whose cases pass `{ backend }` in their
 * options, so a case never branches on the backend.
 */
import { describe } from 'vitest';

export type Backend = 'kernel' | 'flock' | 'lease';

const known: readonly string[] = ['kernel', 'flock', 'lease'];

/** The backends to run, from `XLOCK_BACKENDS`; an unknown name is an error, not a silent skip. */
export const backends: Backend[] = (process.env.XLOCK_BACKENDS ?? 'kernel,flock,lease')
  .split(',')
  .map((b) => b.trim())
  .filter((b) => b.length > 0)
  .map((b) => {
    if (!known.includes(b)) throw new Error(`XLOCK_BACKENDS: unknown backend '${b}' (known: ${known.join(', ')})`);
    return b as Backend;
  });

/** Declares the conformance cases `fn` for one backend. */
export function describeBackend(backend: Backend, fn: (backend: Backend) => void): void {
  describe(`backend '${backend}'`, () => fn(backend));
}
