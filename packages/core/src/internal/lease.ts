/**
 * The lease backend: for filesystems whose kernel locks cannot be trusted
 * (NFS without lock support, FUSE, SMB) and processes where the addon did not
 * load. Plain `fs` only.
 *
 * The protocol:
 *
 * - Existence is the lock. Acquire = write the owner record (versioned
 *   JSON, see owner.ts) into a new temporary side file and hard-link it to
 *   `path` (`link` refuses an existing name); its descriptor stays open for
 *   the lease's lifetime.
 * - Heartbeat: every `heartbeat` ms an unref'd timer checks that the file at
 *   `path` is still our inode, then `futimes` our descriptor (a few us). Loss
 *   (deleted, replaced, taken over) aborts the handle's signal and calls
 *   `onCompromised`; nothing is ever thrown from the timer.
 * - Stale only on proof: (a) the record says same host, same boot, same pid
 *   namespace, and the pid is dead (ESRCH), a zombie with no thread left
 *   (it can never renew its lease again, whether or not its parent reaps
 *   it), or its start time
 *   differs; or (b)
 *   the file (inode, size, mtime) stayed unchanged for the lease length
 *   measured on the *observer's own monotonic clock* since it first saw that
 *   state. No wall-clock comparison across hosts, no "EPERM means dead".
 *   The lease length is the observer's `staleAfter` when given, else what the
 *   holder recorded, else the default.
 * - Takeover: claim the judged state by publishing the taker's own record
 *   under a name derived from that state (`link` to one name: exactly one of
 *   N concurrent takers wins; an abandoned claim is judged like a lease),
 *   check the judged state (and its token) is still at the path, move the
 *   file aside by `rename`, confirm, create afresh, then unlink (see
 *   `claim`). A taker that judged late finds a new state and looks again.
 *   Side files (temporary files, claims, files moved aside) have short
 *   fixed-length names that fit whenever the lock file fits, and a holder
 *   reclaims crash leftovers: lease-sides.ts.
 * - Release: only while the file at `path` is still ours, rename it aside,
 *   confirm, unlink. Never unlink by path alone.
 *
 * Calls are synchronous: each is a short metadata operation, and a
 * threadpool hop would cost more than the operation. Waits poll every
 * `pollInterval` ms, woken early by `fs.watch` on the directory when the
 * file changes locally (inotify does not see other NFS clients' changes),
 * and, while the holder is a process of this host, by a `kill(pid, 0)` probe
 * every few ms: a SIGKILLed holder changes nothing on disk, and its lease
 * comes back within milliseconds instead of a poll interval.
 */
import {
  closeSync,
  constants as fsc,
  fstatSync,
  futimesSync,
  linkSync,
  lstatSync,
  openSync,
  readSync,
  renameSync,
  watch,
  writeSync,
  type FSWatcher,
  type Stats,
} from 'node:fs';
import { randomBytes } from 'node:crypto';
import { basename, dirname } from 'node:path';
import { LockError, lockedError } from '../errors.js';
import { formatRecord, parseRecord, type LockOwner } from '../owner.js';
import { localPid, processStartTicks } from './identity.js';
import { makeDirs } from './dirs.js';
import { hooks } from './hooks.js';
import { DEFAULT_STALE_AFTER, forget, inspect, judge, stateKey } from './lease-stale.js';
import { SideFiles, unlinkQuiet } from './lease-sides.js';
import { withPath } from './oserror.js';
import { kernelHolders } from './proclocks.js';
import { addon, LockType } from '../platform/native.js';
import type { Checked } from './options.js';

/** A held lease. */
export interface Lease {
  release(): Promise<void>;
}

/** `lstat`, or null when the file is gone (a holder reclaimed a side file, see lease-sides.ts). */
function lstatOrNull(path: string): Stats | null {
  return lstatSync(path, { throwIfNoEntry: false }) ?? null;
}

/**
 * Publishes `record` under `name` in one step: written into a temporary side
 * file, which is hard-linked to `name` (`link` refuses an existing name).
 * @returns 'exists' when `name` exists; 'reclaimed' when a holder of the
 * lease removed our temporary file meanwhile (see lease-sides.ts)
 */
function publish(sides: SideFiles, name: string, record: string, mode: number): 'published' | 'exists' | 'reclaimed' {
  const temp = sides.path('create');
  const fd = openSync(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, mode);
  try {
    writeSync(fd, record, 0);
    linkSync(temp, name);
    return 'published';
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'EEXIST') return 'exists';
    if (code === 'ENOENT' && lstatOrNull(temp) === null) return 'reclaimed';
    throw err;
  } finally {
    closeSync(fd);
    unlinkQuiet(temp);
  }
}

/** The claim's content: this process (the taker), so that others can judge an abandoned claim. */
let selfClaim: string | undefined;
const claimRecord = (): string =>
  (selfClaim ??= formatRecord({ backend: 'lease', pid: process.pid, startTicks: processStartTicks(process.pid) }));

/**
 * Claims the lease file judged stale, so that exactly one of several
 * concurrent takers may remove it, and none can remove a live file.
 *
 * The claim is a file whose name is derived from the judged state (see
 * lease-sides.ts) and whose content is the taker's own record: takers that
 * judged the same state race for the same name and only one `link` wins.
 * A claim found in place is another taker's: mid-takeover (leave it), or
 * abandoned by a crash, which its record proves the way a lease's does (its
 * taker is dead) or which stayed unchanged for a lease length on our clock;
 * an abandoned claim is removed and the takeover starts over. The winner
 * checks that the judged state is still at the path, moves it aside by
 * `rename` rather than unlink by path, and confirms. The moved file stays
 * until the winner has created its own lease, so the stale inode (and its
 * number) cannot be reused meanwhile. A side file that vanishes midway was
 * reclaimed by a process that holds the lease now: start over.
 *
 * @returns the claim and the moved file, both to unlink after our create;
 * null when the lease is not ours to break (someone else is breaking it, or
 * it is alive); 'gone' to look again
 */
function claim(
  path: string,
  judged: { st: Stats; owner: LockOwner | null },
  o: Checked,
  sides: SideFiles,
): { name: string; aside: string } | null | 'gone' | 'kernel' {
  const name = sides.claimPath(judged.st);
  const published = publish(sides, name, claimRecord(), o.mode);
  if (published === 'reclaimed') return 'gone';
  if (published === 'exists') {
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

class HeldLease implements Lease {
  readonly #path: string;
  readonly #fd: number;
  readonly #ino: number;
  readonly #sides: SideFiles;
  readonly #lost: (error: LockError) => void;
  #timer: NodeJS.Timeout | undefined;
  #gone: LockError | undefined;

  constructor(path: string, fd: number, sides: SideFiles, beatMs: number, lost: (error: LockError) => void) {
    this.#path = path;
    this.#fd = fd;
    this.#ino = fstatSync(fd).ino;
    this.#sides = sides;
    this.#lost = lost;
    this.#timer = setInterval(() => this.#beat(), beatMs);
    this.#timer.unref();
  }

  #ours(): boolean {
    try {
      const st = lstatSync(this.#path);
      return st.ino === this.#ino && fstatSync(this.#fd).nlink > 0;
    } catch {
      return false;
    }
  }

  #beat(): void {
    if (this.#gone) return;
    if (!this.#ours()) {
      this.#fail(`the lease file '${this.#path}' was deleted or taken over`);
      return;
    }
    try {
      const now = new Date();
      futimesSync(this.#fd, now, now);
    } catch (err) {
      this.#fail(`refreshing the lease on '${this.#path}' failed`, err);
    }
  }

  #fail(message: string, cause?: unknown): void {
    this.#gone = new LockError('ECOMPROMISED', this.#path, message, { cause });
    clearInterval(this.#timer);
    this.#lost(this.#gone);
  }

  async release(): Promise<void> {
    clearInterval(this.#timer);
    let error: unknown = this.#gone;
    try {
      if (!error && this.#ours()) {
        const aside = this.#sides.path('released');
        renameSync(this.#path, aside);
        hooks.leaseStep?.('released', aside);
        // Gone already: a newcomer took the free lease and reclaimed it.
        const moved = lstatOrNull(aside);
        if (moved !== null && moved.ino !== this.#ino) {
          // A takeover swapped files between our check and the rename.
          try {
            linkSync(aside, this.#path);
          } catch {
            // a newcomer exists already
          }
          error = new LockError('ECOMPROMISED', this.#path, `the lease on '${this.#path}' was taken over`);
        }
        unlinkQuiet(aside);
      } else if (!error) {
        error = new LockError('ECOMPROMISED', this.#path, `the lease file '${this.#path}' was deleted or taken over`);
      }
    } catch (err) {
      error ??= withPath(err, this.#path);
    } finally {
      closeSync(this.#fd);
      this.#sides.close();
    }
    if (error) throw error;
  }
}

/**
 * Creates the lease file, record included, in one step: the record is
 * written into a fresh hidden side file beside it (lease-sides.ts), which is
 * then hard-linked to `path` (`link` refuses an existing name). So no process
 * ever sees the lease file empty: a kernel acquirer takes an empty file for a
 * free kernel lock file (docs/installing.md, "Mixing backends"). A crash
 * between the create and the unlink leaves a side file that holds no lock;
 * the next holder reclaims it. A temporary file that vanishes before the
 * link was reclaimed by a holder: `path` exists.
 *
 * @returns the descriptor (of the inode now at `path`), or null when `path` exists
 */
function create(path: string, o: Checked, record: string, sides: SideFiles): number | null {
  let temp: string;
  let fd: number;
  try {
    temp = sides.path('create');
    fd = openSync(temp, fsc.O_WRONLY | fsc.O_CREAT | fsc.O_EXCL | fsc.O_NOFOLLOW, o.mode);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT' && o.parents) {
      makeDirs(dirname(path));
      return create(path, { ...o, parents: false }, record, sides);
    }
    throw withPath(err, path);
  }
  let linked = false;
  try {
    writeSync(fd, record, 0);
    try {
      linkSync(temp, path);
      linked = true;
    } catch (err) {
      const code = (err as NodeJS.ErrnoException).code;
      if (code === 'EEXIST' || (code === 'ENOENT' && lstatOrNull(temp) === null)) return null;
      throw err;
    }
  } catch (err) {
    throw withPath(err, path);
  } finally {
    unlinkQuiet(temp);
    if (!linked) closeSync(fd);
  }
  return fd;
}

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
  const token = randomBytes(16).toString('hex');
  const record = formatRecord({ backend: 'lease', pid, startTicks: processStartTicks(pid), token, leaseMs: staleAfter });
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
