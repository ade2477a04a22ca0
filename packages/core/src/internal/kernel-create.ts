/**
 * Creating a brand-new lock file that is locked before anyone can see it
 * under its final name (`createLocked`, staging's `createAndLock`); the
 * protocol is in docs/staging-protocol.md.
 */
import { constants as fsc } from 'node:fs';
import { join } from 'node:path';
import { CREATE_LINK, CREATE_LOCK, LockType, type NativeAddon } from '../platform/native.js';
import { hooks } from './hooks.js';
import { selfPid } from './identity.js';
import { kernelRecord, native, verifyAndRecord } from './kernel.js';
import { E, osError } from './oserror.js';

let hiddenSeq = 0;
const hiddenBase = `${process.pid.toString(36)}-${Math.floor(Math.random() * 2 ** 32).toString(36)}`;

/**
 * Directories where `O_TMPFILE` (or the link through /proc) was found
 * unavailable: later creates there go to the hidden name at once, instead
 * of paying a failing native call first (a network round trip on NFS).
 */
const noTmpfile = new Set<string>();

/** createTmpfile's "something is at the path": try another name. */
const TAKEN = E.EEXIST - CREATE_LINK;

/**
 * Creates a brand-new lock file in `dir` that is locked and holds our owner
 * record before it is visible under its final name, so a sweeper that
 * try-locks every entry can never lock it between creation and our lock (the
 * publication gap of containers/storage's CreateAndLock, podman#29641).
 *
 * Where the filesystem has `O_TMPFILE`, one native call does it all: an
 * unnamed file (nobody can open it, so nobody can lock it before us), lock,
 * record, then linkat under the final name, which never replaces. Elsewhere
 * (NFS, most FUSE filesystems) {@link createHidden} does it under a hidden
 * name.
 *
 * A name collision (or, under a hidden name, a sweeper's race) retries with
 * a fresh name, up to `attempts`; any other error fails at once, and a failed
 * attempt leaves nothing behind.
 */
export function createKernel(dir: string, nameFor: () => string, mode: number, attempts: number): { fd: number; path: string } {
  const a = native(dir);
  const rec = kernelRecord(selfPid);
  let tmpfile = hooks.createNoTmpfile !== true && !noTmpfile.has(dir);
  let last = '';
  for (let i = 0; i < attempts; i++) {
    last = join(dir, nameFor());
    if (tmpfile) {
      const fd = a.createTmpfile(dir, last, rec.buf, rec.same, mode, hooks.createLinkViaProc ? 1 : 0);
      if (fd >= 0) return { fd, path: last };
      if (fd === TAKEN) continue;
      if (fd <= -CREATE_LINK) throw osError(fd + CREATE_LINK, 'link', last);
      if (fd <= -CREATE_LOCK) throw osError(fd + CREATE_LOCK, 'fcntl', dir);
      if (fd !== E.EOPNOTSUPP) throw osError(fd, 'open', dir);
      tmpfile = false; // not here: this name, and the next ones, under a hidden name
      if (noTmpfile.size >= 256) noTmpfile.clear(); // bounded: forgetting costs one failed open
      noTmpfile.add(dir);
    }
    const fd = createHidden(a, dir, last, mode);
    if (fd >= 0) return { fd, path: last };
  }
  throw Object.assign(new Error(`EEXIST: no free lock file name in '${dir}' after ${attempts} attempts (last '${last}')`), {
    code: 'EEXIST',
    path: dir,
  });
}

/**
 * One attempt without `O_TMPFILE`: exclusive create under a hidden name,
 * lock, inode check and owner record, then rename to `last` without
 * replacing. The descriptor, or -1 to retry with a fresh name (`last` is
 * taken, or a sweeper got to the hidden file first: it deletes it). Throws
 * any other error; a failed attempt deletes its hidden file while still
 * holding it (never one it does not hold).
 */
function createHidden(a: NativeAddon, dir: string, last: string, mode: number): number {
  const hidden = join(dir, `.xlock-${hiddenBase}-${(hiddenSeq++).toString(36)}.tmp`);
  const fd = a.open(hidden, fsc.O_RDWR | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
  if (fd === E.EEXIST) return -1;
  if (fd < 0) throw osError(fd, 'open', dir);
  let published = false;
  let ours = true; // false once a sweeper holds the hidden file: it deletes it
  try {
    hooks.afterCreate?.(hidden);
    const r = a.setlk(fd, LockType.Exclusive);
    if (r === E.EAGAIN) {
      ours = false;
      return -1;
    }
    if (r < 0) throw osError(r, 'fcntl', hidden);
    // A sweeper may have locked, deleted and released our file before our
    // lock, and another created a new file under the same hidden name:
    // renaming that one would publish a file we do not hold.
    const v = verifyAndRecord(a, fd, hidden, kernelRecord(selfPid));
    if (v < 0) throw osError(v, 'fstat', hidden);
    if (v !== 0) {
      ours = false;
      return -1;
    }
    const p = a.renameNoReplace(hidden, last);
    if (p === 0) {
      published = true;
      return fd;
    }
    if (p === E.ENOENT) {
      ours = false; // a sweeper locked the hidden file before us and deleted it
      return -1;
    }
    if (p !== E.EEXIST) throw osError(p, 'rename', last);
    return -1;
  } finally {
    if (!published) {
      if (ours) a.unlinkHeld(fd, hidden);
      a.close(fd);
    }
  }
}
