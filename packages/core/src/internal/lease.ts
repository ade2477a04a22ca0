/**
 * The lease backend: for filesystems whose kernel locks cannot be trusted
 * (NFS without lock support, FUSE, SMB) and processes where the addon did not
 * load. Plain `fs` (the addon, when loaded, does two steps in one call each).
 *
 * The protocol:
 *
 * - Existence is the lock. Acquire = publish the owner record (versioned
 *   JSON, see owner.ts) as a new file under `path` in one step, never
 *   visible empty: written into an unnamed `O_TMPFILE` file that is then
 *   linked to `path`, or where that is not available, into a temporary side
 *   file that is hard-linked to `path` (`link` refuses an existing name; see
 *   lease-publish.ts). Its descriptor stays open for the lease's lifetime.
 * - Heartbeat: every `heartbeat` ms an unref'd timer checks that the file at
 *   `path` is still our inode, then `futimes` our descriptor (a few us). Loss
 *   (deleted, replaced, taken over) aborts the handle's signal and calls
 *   `onCompromised`; nothing is ever thrown from the timer (lease-held.ts).
 * - Stale only on proof (lease-stale.ts): (a) the record says same host,
 *   same boot, same pid namespace, and the pid is dead (ESRCH), a zombie with
 *   no thread left (it can never renew its lease again, whether or not its
 *   parent reaps it), or its start time differs; or (b) the file (inode,
 *   size, mtime) stayed unchanged for the lease length measured on the
 *   *observer's own monotonic clock* since it first saw that state. No
 *   wall-clock comparison across hosts, no "EPERM means dead". The lease
 *   length is the observer's `staleAfter` when given, else what the holder
 *   recorded, else the default.
 * - Takeover (lease-claim.ts): claim the judged state by publishing the
 *   taker's own record under a name derived from that state (exactly one of
 *   N concurrent takers wins; an abandoned claim is judged like a lease),
 *   check the judged state (and its token) is still at the path, move the
 *   file aside by `rename`, confirm, create afresh, then unlink. A taker that
 *   judged late finds a new state and looks again. Side files (temporary
 *   files, claims, files moved aside) have short fixed-length names that fit
 *   whenever the lock file fits, and a holder reclaims crash leftovers:
 *   lease-sides.ts.
 * - Release (lease-held.ts): only while the file at `path` is still ours,
 *   rename it aside, confirm, unlink. Never unlink by path alone.
 *
 * Calls are synchronous: each is a short metadata operation, and a
 * threadpool hop would cost more than the operation. Waits poll every
 * `pollInterval` ms, woken early by `fs.watch` on the directory when the
 * file changes locally (inotify does not see other NFS clients' changes),
 * and, while the holder is a process of this host, by a `kill(pid, 0)` probe
 * every few ms: a SIGKILLed holder changes nothing on disk, and its lease
 * comes back within milliseconds instead of a poll interval.
 */
import { randomBytes } from 'node:crypto';
import { fstatSync, readSync, watch, type FSWatcher, type Stats } from 'node:fs';
import { basename, dirname } from 'node:path';
import { LockError, lockedError } from '../errors.js';
import { formatRecord, parseRecord, type LockOwner } from '../owner.js';
import { hooks } from './hooks.js';
import { localPid } from './identity.js';
import { claim } from './lease-claim.js';
import { HeldLease, type Lease } from './lease-held.js';
import { create } from './lease-publish.js';
import { nextUnique, SideFiles, unlinkQuiet } from './lease-sides.js';
import { DEFAULT_STALE_AFTER, forget, inspect, judge } from './lease-stale.js';
import type { Checked } from './options.js';

export type { Lease } from './lease-held.js';

/** The first half of this process's lease tokens; the second half counts (lease-sides.ts). */
const tokenBase = randomBytes(8).toString('hex');

/**
 * Whether the lease file open on `fd` at `path` is held, by the rules a lease
 * taker uses (proof of death, or unchanged for a lease length on our clock).
 * For the kernel backend, which finds a lease where it wanted a lock file.
 */
export function leaseOnFile(
  path: string,
  fd: number,
  o: Checked,
): { held: boolean; owner: LockOwner | null; pid: number | undefined } {
  const st = fstatSync(fd);
  const buf = Buffer.allocUnsafe(4096);
  const n = readSync(fd, buf, 0, buf.length, 0);
  const owner = parseRecord(buf.toString('utf8', 0, n), st.mtimeMs);
  const held = !judge(path, { st, owner }, o);
  if (!held) forget(path);
  return { held, owner, pid: localPid(owner) };
}

/** The error of a lease acquirer that meets a kernel lock file (docs/installing.md, "Mixing backends"). */
function kernelFile(path: string, owner: LockOwner | null): LockError {
  return new LockError(
    'ENOTSUP',
    path,
    `'${path}' is a kernel lock file${owner?.pid ? ` (last taken by pid ${owner.pid})` : ''}, not a lease: ` +
      "processes lock it with backend 'kernel', and a lease cannot exclude them; take it with backend 'kernel'",
    { owner: owner ?? undefined },
  );
}

/** A file a lease may take over: a lease record, or the legacy pid text of nftban and Julia's Pidfile. */
function leaseFile(seen: { st: Stats; owner: LockOwner | null }): boolean {
  return (
    seen.owner !== null && seen.owner.backend !== 'kernel' && (seen.owner.backend === 'lease' || seen.owner.version === undefined)
  );
}

/** Lease paths whose side files this process has already reclaimed once. */
const reclaimed = new Set<string>();

/** How often a waiter checks that a local holder's pid still exists (one kill(pid, 0)). */
const DEATH_PROBE_MS = 3;

/**
 * Sleeps `ms`, or less when the watcher reports a change or, with `pid`, as
 * soon as that process is gone (a SIGKILLed holder changes nothing on disk,
 * so neither the watcher nor a long poll would notice it soon); rejects on
 * abort.
 */
export function nap(ms: number, signal: AbortSignal, wake: { fn?: () => void }, pid: number | undefined): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      if (probe) clearInterval(probe);
      signal.removeEventListener('abort', onAbort);
      wake.fn = undefined;
    };
    const onAbort = () => {
      done();
      reject(signal.reason as Error);
    };
    const timer = setTimeout(() => {
      done();
      resolve();
    }, ms);
    const probe =
      pid === undefined || ms <= DEATH_PROBE_MS
        ? undefined
        : setInterval(() => {
            try {
              process.kill(pid, 0);
            } catch (err) {
              if ((err as NodeJS.ErrnoException).code === 'ESRCH') wake.fn?.();
            }
          }, DEATH_PROBE_MS);
    wake.fn = () => {
      done();
      resolve();
    };
    signal.addEventListener('abort', onAbort, { once: true });
  });
}

/**
 * Takes the lease on `path`. Without `wait`, a live holder rejects ELOCKED
 * at once; with it, polls (woken early by fs.watch) until the lease is free
 * or provably stale, or the signal aborts.
 */
export async function acquireLease(
  path: string,
  o: Checked,
  pid: number,
  wait: (() => AbortSignal) | undefined,
  lost: (error: LockError) => void,
): Promise<Lease> {
  const staleAfter = o.staleAfter ?? DEFAULT_STALE_AFTER;
  const beat = o.heartbeat ?? Math.max(1, Math.floor(staleAfter / 4));
  const record = formatRecord('lease', pid, { token: tokenBase + nextUnique(), leaseMs: staleAfter });
  let watcher: FSWatcher | undefined;
  const wake: { fn?: () => void } = {};
  const sides = new SideFiles(path);
  let held: HeldLease | undefined;
  try {
    for (;;) {
      let fd = create(path, o, record, sides);
      let tookOver = false;
      if (fd === null) {
        const seen = inspect(path);
        if (seen === null) continue; // released between our create and our look
        // Kernel lockers keep their file (empty, or with a kernel record): no
        // lease will ever be granted here, so say so now, not at a timeout.
        if (!leaseFile(seen)) throw kernelFile(path, seen.owner);
        if (judge(path, seen, o)) {
          if (hooks.beforeTakeover) await hooks.beforeTakeover(path);
          const claimed = claim(path, seen, o, sides);
          if (claimed === 'gone') continue;
          if (claimed === 'kernel') throw kernelFile(path, seen.owner);
          if (claimed !== null) {
            try {
              fd = create(path, o, record, sides);
            } finally {
              unlinkQuiet(claimed.aside);
              unlinkQuiet(claimed.name);
            }
            if (fd === null) continue; // a newcomer was faster: judge it
            tookOver = true;
          }
        }
        if (fd === null) {
          if (!wait) {
            throw lockedError(path, seen.owner);
          }
          const signal = wait();
          signal.throwIfAborted();
          if (!watcher) {
            try {
              watcher = watch(dirname(path), { persistent: false }, (_event, name) => {
                if (name === null || name === basename(path)) wake.fn?.();
              });
              watcher.on('error', () => undefined);
            } catch {
              // no inotify (limits, NFS): polling alone
            }
          }
          hooks.leaseNap?.(path);
          await nap(o.pollInterval, signal, wake, localPid(seen.owner));
          continue;
        }
      }
      forget(path);
      held = new HeldLease(path, fd, sides, beat, lost);
      // Crash leftovers (lease-sides.ts): looked for after a takeover (its
      // holder died, perhaps mid-step) and on this process's first lease of
      // the path (a crash before we ran), never on the hot path after that.
      if (tookOver || !reclaimed.has(path)) {
        if (reclaimed.size >= 10_000) reclaimed.clear(); // bounded: forgetting costs one readdir
        reclaimed.add(path);
        sides.reclaim();
      }
      return held;
    }
  } finally {
    watcher?.close();
    if (!held) sides.close();
  }
}
