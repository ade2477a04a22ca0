/**
 * Asking whether a lock file is held, without creating a file at its path,
 * deleting anything, or rewriting its owner record: a *shared* kernel lock
 * taken with `create: false` (no record is written; shared probes do not
 * conflict with each other). A holder of an exclusive lock, in any process
 * including this one, or a classic POSIX `fcntl` holder (podman, Python
 * `lockf`) makes it ELOCKED; a file that vanished makes it ENOENT, and
 * nothing is created.
 *
 * The only disturbance: for the microseconds the shared lock is held, an
 * exclusive try-lock of the same file by someone else fails (and a waiter
 * waits that long). A holder is never affected.
 *
 * Lease lock files (`@x/core`'s portable backend) hold no kernel lock: their
 * state comes from the owner record (held unless the recorded process is
 * provably dead on this host, or the lease ran out without a refresh).
 */
import { isLockError, readOwner, tryLock, type LockOwner } from '@x/core';
import { errnoOf, lstatQuiet } from './fsutil.js';

/** A lock file's state: held by someone, free (reclaimable), gone, or not known. */
export type ProbeState = 'held' | 'free' | 'missing' | 'unknown';

/** What a probe found. */
export interface Probe {
  state: ProbeState;
  /** The holder (held), or the last holder the record names (free); null when unknown. */
  owner: LockOwner | null;
  /** Why the state is `unknown`. */
  error?: Error | undefined;
}

async function ownerOrNull(path: string): Promise<LockOwner | null> {
  try {
    return await readOwner(path);
  } catch {
    return null;
  }
}

/**
 * Probes the lock file at `path` (see the module comment). Never rejects for
 * OS errors: they give `unknown`. With `withOwner: false` the owner record is
 * not read, and the file is taken for a kernel lock file (staging lock files
 * always are).
 */
export async function probeLock(path: string, withOwner = true): Promise<Probe> {
  try {
    const st = lstatQuiet(path);
    if (!st) return { state: 'missing', owner: null };
    if (!st.isFile()) {
      return {
        state: 'unknown',
        owner: null,
        error: Object.assign(new Error(`'${path}' is not a regular file`), { code: 'EINVAL', path }),
      };
    }
    const owner = withOwner ? await ownerOrNull(path) : null;
    // readOwner judges a lease file's holder (pid running here, heartbeat younger than the lease).
    if (owner?.backend === 'lease') return { state: owner.held === false ? 'free' : 'held', owner };
    let held;
    try {
      held = await tryLock(path, { backend: 'kernel', shared: true, create: false });
    } catch (err) {
      if (isLockError(err, 'ELOCKED')) return { state: 'held', owner: err.owner ?? owner };
      if (errnoOf(err) === 'ENOENT') return { state: 'missing', owner: null };
      throw err;
    }
    await held.release();
    return { state: 'free', owner };
  } catch (err) {
    return { state: 'unknown', owner: withOwner ? await ownerOrNull(path) : null, error: err as Error };
  }
}
