/**
 * Asking whether a lock file is held, and by whom, without creating a file
 * at its path, deleting anything, rewriting its owner record or taking any
 * lock: `readOwner` asks the kernel (F_OFD_GETLK for every fcntl and OFD
 * lock, shared or exclusive; /proc/locks on Linux for flock(2) locks and for
 * the pids of classic POSIX and flock holders) and reads the owner record,
 * which it believes only while the kernel still sees that holder. So a file
 * held shared (our `shared: true`, a Go `RLock`, Python `lockf(LOCK_SH)`) is
 * `held`, and a POSIX reader is named as the holder, not the past writer the
 * record names.
 *
 * Lease lock files (`@x/core`'s portable backend) hold no kernel lock: their
 * state comes from the owner record (held unless the recorded process is
 * provably dead on this host, or the lease ran out without a refresh).
 */
import { readOwner, type LockOwner } from '@x/core';
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

/**
 * Probes the lock file at `path` (see the module comment). Never rejects for
 * OS errors: they give `unknown`.
 */
export async function probeLock(path: string): Promise<Probe> {
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
    const owner = await readOwner(path);
    // null: nobody holds it and no record names anyone (or it just vanished).
    if (owner === null) return lstatQuiet(path) ? { state: 'free', owner: null } : { state: 'missing', owner: null };
    // readOwner judges a lease file's holder (pid running here, heartbeat younger than the lease).
    if (owner.held === undefined) {
      return { state: 'unknown', owner, error: new Error(`cannot tell whether '${path}' is held (no kernel locks here)`) };
    }
    return { state: owner.held ? 'held' : 'free', owner };
  } catch (err) {
    if (errnoOf(err) === 'ENOENT') return { state: 'missing', owner: null };
    return { state: 'unknown', owner: null, error: err as Error };
  }
}
