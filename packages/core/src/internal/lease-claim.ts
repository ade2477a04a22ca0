/**
 * Takeover of a lease judged stale (lease-stale.ts judges; see lease.ts for
 * the whole protocol): claim the judged state so that exactly one of N
 * concurrent takers may remove it and none can remove a live file, move it
 * aside, confirm, and make sure no kernel locker took the dead lease's file.
 */
import { closeSync, constants as fsc, linkSync, lstatSync, openSync, renameSync, type Stats } from 'node:fs';
import { formatRecord, type LockOwner } from '../owner.js';
import { selfPid } from './identity.js';
import { addon, LockType } from '../platform/native.js';
import { hooks } from './hooks.js';
import { publish } from './lease-publish.js';
import { SideFiles, unlinkQuiet } from './lease-sides.js';
import { forget, inspect, judge, stateKey } from './lease-stale.js';
import type { Checked } from './options.js';
import { kernelHolders } from './proclocks.js';

/** `lstat`, or null when the file is gone (a holder reclaimed a side file, see lease-sides.ts). */
export function lstatOrNull(path: string): Stats | null {
  return lstatSync(path, { throwIfNoEntry: false }) ?? null;
}

/** The claim's content: this process (the taker), so that others can judge an abandoned claim. */
let selfClaim: string | undefined;
const claimRecord = (): string => (selfClaim ??= formatRecord('lease', selfPid));

/**
 * Claims the lease file judged stale, so that exactly one of several
 * concurrent takers may remove it, and none can remove a live file.
 *
 * The claim is a file whose name is derived from the judged state (see
 * lease-sides.ts) and whose content is the taker's own record: takers that
 * judged the same state race for the same name and only one publish wins
 * (lease-publish.ts). A claim found in place is another taker's:
 * mid-takeover (leave it), or abandoned by a crash, which its record proves
 * the way a lease's does (its taker is dead) or which stayed unchanged for a
 * lease length on our clock; an abandoned claim is removed and the takeover
 * starts over. The winner checks that the judged state is still at the path,
 * moves it aside by `rename` rather than unlink by path, and confirms. The
 * moved file stays until the winner has created its own lease, so the stale
 * inode (and its number) cannot be reused meanwhile. A side file that
 * vanishes midway was reclaimed by a process that holds the lease now: start
 * over.
 *
 * @returns the claim and the moved file, both to unlink after our create;
 * null when the lease is not ours to break (someone else is breaking it, or
 * it is alive); 'gone' to look again; 'kernel' when a kernel locker holds
 * the dead lease's file
 */
export function claim(
  path: string,
  judged: { st: Stats; owner: LockOwner | null },
  o: Checked,
  sides: SideFiles,
): { name: string; aside: string } | null | 'gone' | 'kernel' {
  const name = sides.claimPath(judged.st);
  if (publish(sides, name, claimRecord(), o.mode, false) === 'exists') {
    const taker = inspect(name);
    if (taker === null) return 'gone';
    if (judge(`\0claim\0${name}`, taker, o)) {
      unlinkQuiet(name); // its taker is dead, or gone silent for a lease length
      return 'gone';
    }
    return null;
  }
  hooks.leaseStep?.('claimed', name);
  // Still the judged lease? Its token too, not only inode, size and mtime:
  // a new file may reuse a freed inode number within one timestamp tick.
  const now = inspect(path);
  if (now === null || stateKey(now.st) !== stateKey(judged.st) || now.owner?.token !== judged.owner?.token) {
    unlinkQuiet(name); // released, or replaced by a live file: look again
    return 'gone';
  }
  // Ours to break. Move it aside rather than unlink by path, and confirm.
  const aside = sides.path('broken');
  try {
    renameSync(path, aside);
  } catch (err) {
    unlinkQuiet(name);
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw err;
  }
  hooks.leaseStep?.('broken', aside);
  const moved = lstatOrNull(aside);
  if (moved === null) {
    unlinkQuiet(name);
    return 'gone';
  }
  if (moved.ino !== judged.st.ino) {
    // Its holder resumed and released, and a newcomer slipped in: put it back.
    try {
      linkSync(aside, path);
    } catch {
      // a third file exists; the displaced holder learns on its next beat
    }
    unlinkQuiet(aside);
    unlinkQuiet(name);
    return null;
  }
  const locked = kernelLocked(aside);
  if (locked === 'gone') {
    unlinkQuiet(name); // reclaimed by a process that holds the lease now: look again
    return 'gone';
  }
  if (locked) {
    // A kernel acquirer took the dead lease's file (a shared lock writes no
    // record; a legacy pid file keeps its text): it is a kernel lock file now.
    // Checked after the rename, so no kernel lock can slip in unseen: one
    // taken before it shows here, one taken after it fails its inode check.
    try {
      linkSync(aside, path);
    } catch {
      // a third file exists; the kernel holder's inode is displaced (see docs)
    }
    unlinkQuiet(aside);
    unlinkQuiet(name);
    return 'kernel';
  }
  forget(path);
  return { name, aside };
}

/** Whether any kernel lock (fcntl, OFD or flock) is held on the file at `path`; 'gone' when it is not there. */
function kernelLocked(path: string): boolean | 'gone' {
  const st = lstatSync(path, { bigint: true, throwIfNoEntry: false });
  if (st === undefined) return 'gone';
  const holders = kernelHolders(st.dev, st.ino);
  if (holders) return holders.length > 0;
  if (!addon) return false; // no /proc/locks and no addon: nothing can tell
  let fd;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return 'gone';
    throw err;
  }
  try {
    return addon.getlk(fd, LockType.Exclusive) !== 0;
  } finally {
    closeSync(fd);
  }
}
