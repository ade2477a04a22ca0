/**
 * Publishing: how a lease file (or a takeover's claim, see lease-claim.ts)
 * comes into existence under its name, record included, in one step, so
 * that no process ever sees it empty or half-written (a kernel acquirer
 * takes an empty file for a free kernel lock file: docs/installing.md,
 * "Mixing backends"). `link` refuses an existing name: that refusal is the
 * lock. One protocol, two ways to do it:
 *
 * - with the addon, where the filesystem supports `O_TMPFILE`: an unnamed
 *   file in the directory, written, then linked to its name (`linkat` with
 *   `AT_EMPTY_PATH`, or through /proc/self/fd on kernels before 6.10), all
 *   in one native call (native/lease.c): no temporary name, and nothing left
 *   behind by a crash;
 * - otherwise (no addon; NFS, most FUSE filesystems, kernels before 3.11):
 *   a temporary side file (`.<h>.create.<u>`, lease-sides.ts) is created,
 *   written and hard-linked to the name, then unlinked. A crash in between
 *   leaves that side file; the next holder reclaims it. A temporary file
 *   that vanishes before the link was reclaimed by a holder of the lease:
 *   the name exists.
 */
import { closeSync, constants as fsc, linkSync, lstatSync, openSync, writeSync } from 'node:fs';
import { constants as os } from 'node:os';
import { dirname } from 'node:path';
import { addon } from '../platform/native.js';
import { makeDirs } from './dirs.js';
import { hooks } from './hooks.js';
import { SideFiles, unlinkQuiet } from './lease-sides.js';
import { E, osError, withPath } from './oserror.js';
import type { Checked } from './options.js';

/** The addon, when it has the lease calls (an `XLOCK_ADDON` from an older build may not). */
export const leaseNative = addon && typeof addon.leasePublish === 'function' ? addon : null;

const EOPNOTSUPP = -os.errno.EOPNOTSUPP;

/**
 * Publishes `record` under `name` (the lock file, or a claim) in one step.
 * @returns the descriptor of the new file when `keep` (else 0); 'exists'
 * when `name` exists (or a holder reclaimed our temporary file meanwhile,
 * which means a holder exists)
 */
export function publish(sides: SideFiles, name: string, record: string, mode: number, keep: boolean): number | 'exists' {
  if (leaseNative && !hooks.leaseNoTmpfile) {
    const r = leaseNative.leasePublish(sides.dir, name, record, mode, (keep ? 1 : 0) | (hooks.leaseLinkViaProc ? 2 : 0));
    if (r >= 0) return r;
    if (r === E.EEXIST) return 'exists';
    if (r !== EOPNOTSUPP) throw osError(r, 'open', name);
  }
  const temp = sides.path('create');
  const fd = openSync(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
  let linked = false;
  try {
    writeSync(fd, record, 0);
    linkSync(temp, name);
    linked = true;
    return keep ? fd : 0;
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return 'exists';
    if (code === 'ENOENT' && lstatSync(temp, { throwIfNoEntry: false }) === undefined) return 'exists';
    throw err;
  } finally {
    if (!linked || !keep) closeSync(fd);
    unlinkQuiet(temp);
  }
}

/**
 * Creates the lease file at `path` holding `record` (see {@link publish});
 * creates missing parent directories with `parents`.
 * @returns the descriptor of the inode now at `path`, or null when `path` exists
 */
export function create(path: string, o: Checked, record: string, sides: SideFiles): number | null {
  try {
    const r = publish(sides, path, record, o.mode, true);
    return r === 'exists' ? null : r;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && o.parents) {
      makeDirs(dirname(path));
      return create(path, { ...o, parents: false }, record, sides);
    }
    throw withPath(err, path);
  }
}
