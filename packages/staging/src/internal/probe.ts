/**
 * Asking whether a lock file is held, without creating a file at its path,
 * deleting anything, or rewriting its owner record.
 *
 * `tryLock` opens with `O_CREAT`: if the file vanished between our `lstat`
 * and its `open`, it would create it, and an exclusive lock would replace
 * the owner record with ours. So the probe
 *
 *   1. hard-links the file to a hidden name in the same directory
 *      (`.xlock-probe-*.tmp`: a name sweepers treat as a stray hidden lock
 *      file). If the file is gone, `link` fails with ENOENT and nothing was
 *      created;
 *   2. takes a *shared* kernel lock through that name (no record is written;
 *      shared probes do not conflict with each other). A holder of an
 *      exclusive lock, in any process including this one, or a classic
 *      POSIX `fcntl` holder (podman, Python `lockf`) makes it ELOCKED;
 *   3. checks, while holding, that the name still leads to the inode it
 *      looked at (a sweeper may delete a free probe link, and `tryLock` would
 *      then have created a new file), releases, and unlinks the hidden name.
 *
 * The only disturbance: for the microseconds the shared lock is held, an
 * exclusive try-lock of the same file by someone else fails (and a waiter
 * waits that long). A holder is never affected.
 *
 * When the directory refuses a hard link (EPERM under
 * `fs.protected_hardlinks` for a file of another user, EACCES, EROFS,
 * EMLINK, ENOTSUP), the shared probe goes to the path itself; then, only if
 * the file vanishes in that instant, an empty file may be left at the path.
 *
 * Lease lock files (`@x/core`'s portable backend) hold no kernel lock: their
 * state comes from the owner record (held unless the recorded process is
 * provably dead on this host, or the lease ran out without a refresh).
 */
import { isLockError, isProcessAlive, readOwner, tryLock, type LockOwner } from '@x/core';
import { randomBytes } from 'node:crypto';
import { linkSync, unlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { errnoOf, lstatQuiet } from './fsutil.js';

/** A lock file's state: held by someone, free (reclaimable), gone, or not known. */
export type ProbeState = 'held' | 'free' | 'missing' | 'unknown';

/** What a probe found. */
export interface Probe {
  state: ProbeState;
  /** The holder (held), or the last holder the record names (free); null when unknown. */
  owner: LockOwner | null;
  /** Why the state is `unknown`. */
  error?: Error;
}

/** The prefix of probe links; sweeps skip or reclaim them like other hidden lock files. */
export const PROBE_PREFIX = '.xlock-probe-';

const noLink = new Set(['EPERM', 'EACCES', 'EROFS', 'EMLINK', 'ENOTSUP', 'EOPNOTSUPP', 'EXDEV']);
let seq = 0;

function leaseHeld(owner: LockOwner): boolean {
  if (owner.pid !== undefined && !isProcessAlive(owner.pid, owner.hostname)) return false;
  if (owner.leaseMs !== undefined && owner.age !== undefined && owner.age > owner.leaseMs) return false;
  return true;
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
  let last: Probe = { state: 'unknown', owner: null };
  for (let attempt = 0; attempt < 3; attempt++) {
    try {
      const probe = await probeOnce(path, withOwner);
      if (probe) return probe;
    } catch (err) {
      return { state: 'unknown', owner: withOwner ? await ownerOrNull(path) : null, error: err as Error };
    }
    last = { state: 'unknown', owner: null, error: new Error(`'${path}' kept changing while probed`) };
  }
  return last;
}

/** One attempt; `null` when the file changed under the probe (try again). */
async function probeOnce(path: string, withOwner: boolean): Promise<Probe | null> {
  const st = lstatQuiet(path);
  if (!st) return { state: 'missing', owner: null };
  if (!st.isFile()) {
    return { state: 'unknown', owner: null, error: Object.assign(new Error(`'${path}' is not a regular file`), { code: 'EINVAL', path }) };
  }
  const owner = withOwner ? await ownerOrNull(path) : null;
  if (owner?.backend === 'lease') return { state: leaseHeld(owner) ? 'held' : 'free', owner };

  const hidden = join(dirname(path), `${PROBE_PREFIX}${process.pid.toString(36)}-${randomBytes(4).toString('hex')}-${(seq++).toString(36)}.tmp`);
  let target = hidden;
  try {
    linkSync(path, hidden);
  } catch (err) {
    const code = errnoOf(err);
    if (code === 'ENOENT') return { state: 'missing', owner: null };
    if (code === 'EEXIST') return null;
    if (!code || !noLink.has(code)) throw err;
    target = path; // fall back to a direct shared probe (see the module comment)
  }
  try {
    let held;
    try {
      held = await tryLock(target, { backend: 'kernel', shared: true });
    } catch (err) {
      if (isLockError(err, 'ELOCKED')) return { state: 'held', owner: err.owner ?? owner };
      throw err;
    }
    try {
      const now = lstatQuiet(target);
      if (!now || now.ino !== st.ino || now.dev !== st.dev) return null;
    } finally {
      await held.release();
    }
    return { state: 'free', owner };
  } finally {
    if (target === hidden) {
      try {
        unlinkSync(hidden);
      } catch {
        // a sweep deleted it already
      }
    }
  }
}
