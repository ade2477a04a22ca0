/**
 * Judging a lease file (see lease.ts for the protocol): stale only on proof.
 * Either its recorded owner is provably dead (same host, boot and pid
 * namespace, and the pid is gone, a lone zombie, or a different process by
 * start time), or the file stayed unchanged for the lease length measured on
 * the observer's own monotonic clock since it first saw that state.
 */
import { closeSync, constants as fsc, fstatSync, openSync, readSync, type Stats } from 'node:fs';
import { parseRecord, type LockOwner } from '../owner.js';
import { holderLiveness } from './identity.js';
import { withPath } from './oserror.js';
import type { Checked } from './options.js';

/** Lease length when neither the observer nor the record says. */
export const DEFAULT_STALE_AFTER = 10_000;

/** What an observer saw of a lease file: any change means its holder is alive. */
interface Seen {
  key: string;
  since: number;
}
const observations = new Map<string, Seen>();

// Not ctime: our own takeover rename changes it.
export const stateKey = (st: Stats): string => `${st.dev}:${st.ino}:${st.size}:${st.mtimeMs}`;

/** Reads the lease file at `path` without following a symlink; null when it is gone. */
export function inspect(path: string): { st: Stats; owner: LockOwner | null } | null {
  let fd: number;
  try {
    fd = openSync(path, fsc.O_RDONLY | fsc.O_NOFOLLOW | fsc.O_NONBLOCK);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return null;
    throw err;
  }
  try {
    const st = fstatSync(fd);
    const buf = Buffer.allocUnsafe(4096);
    const n = readSync(fd, buf, 0, buf.length, 0);
    return { st, owner: parseRecord(buf.toString('utf8', 0, n), st.mtimeMs) };
  } catch (err) {
    throw withPath(err, path);
  } finally {
    closeSync(fd);
  }
}

/**
 * Judges the lease at `path`: 'stale' (with the state judged), or 'held'.
 * The observer's monotonic clock runs from the first time it saw this exact
 * state of the file.
 */
export function judge(path: string, seen: { st: Stats; owner: LockOwner | null }, o: Checked): boolean {
  if (holderLiveness(seen.owner) === 'dead') return true;
  const key = stateKey(seen.st);
  const now = performance.now();
  const prev = observations.get(path);
  if (!prev || prev.key !== key) {
    observations.set(path, { key, since: now });
    return false;
  }
  const leaseMs = o.staleAfter ?? seen.owner?.leaseMs ?? DEFAULT_STALE_AFTER;
  return now - prev.since >= leaseMs;
}

/** Forgets what was observed of `path` (its lease was taken: a new state begins). */
export function forget(path: string): void {
  observations.delete(path);
}
