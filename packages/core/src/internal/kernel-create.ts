/**
 * Creating a brand-new lock file that is locked before anyone can see it
 * under its final name (`createLocked`, staging's `createAndLock`).
 */
import { constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { LockType } from '../platform/native.js';
import { hooks } from './hooks.js';
import { selfPid } from './identity.js';
import { kernelRecord, native, verifyAndRecord } from './kernel.js';
import { E, osError } from './oserror.js';

let hiddenSeq = 0;
const hiddenBase = `${process.pid.toString(36)}-${Math.floor(Math.random() * 2 ** 32).toString(36)}`;

/**
 * Creates a brand-new lock file in `dir` that is locked before it is visible
 * under its final name: exclusive create under a hidden name, lock, owner
 * record, then rename without replacing. So a sweeper that try-locks every
 * entry can never lock it between creation and our lock (the publication gap
 * of containers/storage's CreateAndLock, podman#29641).
 *
 * A name collision or a hidden file locked by a sweeper retries with a fresh
 * name, up to `attempts`; any other error fails at once, and a failed attempt
 * leaves nothing behind (the hidden file is deleted while still held).
 */
export function createKernel(dir: string, nameFor: () => string, mode: number, attempts: number): { fd: number; path: string } {
  const a = native(dir);
  let last = '';
  for (let i = 0; i < attempts; i++) {
    last = join(dir, nameFor());
    const hidden = join(dir, `.xlock-${hiddenBase}-${(hiddenSeq++).toString(36)}.tmp`);
    const fd = a.open(hidden, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
    if (fd === E.EEXIST) continue;
    if (fd < 0) throw osError(fd, 'open', dir);
    let published = false;
    let ours = true; // false once a sweeper holds the hidden file: it deletes it
    try {
      hooks.afterCreate?.(hidden);
      const r = a.setlk(fd, LockType.Exclusive);
      if (r === E.EAGAIN) {
        ours = false;
        continue;
      }
      if (r < 0) throw osError(r, 'fcntl', hidden);
      // A sweeper may have locked, deleted and released our file before our
      // lock, and another created a new file under the same hidden name:
      // renaming that one would publish a file we do not hold.
      const v = verifyAndRecord(a, fd, hidden, kernelRecord(selfPid));
      if (v < 0) throw osError(v, 'fstat', hidden);
      if (v !== 0) {
        ours = false;
        continue;
      }
      const p = a.renameNoReplace(hidden, last);
      if (p === 0) {
        published = true;
        return { fd, path: last };
      }
      if (p === E.ENOENT) {
        ours = false; // a sweeper locked the hidden file before us and deleted it
        continue;
      }
      if (p !== E.EEXIST) throw osError(p, 'rename', last);
    } finally {
      if (!published) {
        if (ours) a.unlinkHeld(fd, hidden);
        a.close(fd);
      }
    }
  }
  throw Object.assign(new Error(`EEXIST: no free lock file name in '${dir}' after ${attempts} attempts (last '${last}')`), {
    code: 'EEXIST',
    path: dir,
  });
}
