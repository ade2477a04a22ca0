import { AsyncLocalStorage } from 'node:async_hooks';
import { statfsSync } from 'node:fs';
import { dirname } from 'node:path';
import { LockError } from './errors.js';
import { isProcessAlive } from './owner.js';
import { addon, kernelLocks } from './platform/native.js';
import { hooks } from './internal/hooks.js';
import {
  acquireKernel,
  kernelAfterWait,
  lockKernelNow,
  waitKernel,
  type KernelBusy,
  type KernelHeld,
} from './internal/kernel.js';
import { selfPid } from './internal/identity.js';
import { createKernel } from './internal/kernel-create.js';
import { acquireLease } from './internal/lease.js';
import { FileLock, token } from './filelock.js';
import { absolute, checkOptions, checkPath, show, type Checked, type LockOptions } from './internal/options.js';
import { abortable, enqueue, queued, WaitScope } from './internal/wait.js';

export type { LockOptions } from './internal/options.js';
export { FileLock } from './filelock.js';

/** Paths held by the `withLock` calls the current async context runs inside. */
const inside = new AsyncLocalStorage<ReadonlySet<string>>();

// statfs(2) f_type magics of filesystems whose kernel locks we do not trust.
const remoteFs = new Set([
  0x6969 /* NFS */, 0x517b /* SMB */, 0xff534d42 /* CIFS */, 0xfe534d42 /* SMB2 */, 0x65735546 /* FUSE */,
]);

/** Whether the filesystem holding `dir` (or its nearest existing ancestor) is one of `remoteFs`. */
function onRemoteFs(dir: string): boolean {
  for (let d = dir; ; d = dirname(d)) {
    try {
      return remoteFs.has(Number(statfsSync(d).type) >>> 0);
    } catch {
      if (dirname(d) === d) return false; // nothing exists: let open() report it
    }
  }
}

/**
 * `'auto'`: the lease where the directory's filesystem calls for it (NFS,
 * SMB, FUSE), else kernel locks, and never a lease in their place: without
 * the addon that is `ENOTSUP`, since other processes take kernel locks on the
 * same files and a lease would not exclude them. Asked on every call (one
 * statfs), so a mount that appears or goes away while we run is followed.
 */
function chooseBackend(path: string, o: Checked): 'kernel' | 'flock' | 'lease' {
  if (o.backend !== 'auto') return o.backend;
  if (onRemoteFs(dirname(path))) return 'lease';
  if (!addon) {
    throw new LockError('ENOTSUP', path, `kernel locks are not available in this process: ${kernelLocks.reason}`);
  }
  return 'kernel';
}

function checkPid(o: Checked, path: string): number {
  if (o.child && (o.pid === undefined || o.child.exitCode !== null || o.child.signalCode !== null)) {
    throw new LockError('ESRCH', path, 'the child process given as `pid` is not running');
  }
  if (o.pid === undefined) return selfPid;
  if (!isProcessAlive(o.pid)) throw new LockError('ESRCH', path, `process ${o.pid} given as \`pid\` is not running`);
  return o.pid;
}

function acquire(path: unknown, options: unknown, wait: boolean): Promise<FileLock> {
  let abs: string, o: Checked, backend: 'kernel' | 'flock' | 'lease', pid: number;
  try {
    abs = absolute(checkPath(path));
    o = checkOptions(options);
    if (inside.getStore()?.has(abs)) {
      throw new LockError('ELOCKED', abs, `'${abs}' is already held by the enclosing withLock() of this async context`);
    }
    backend = chooseBackend(abs, o);
    if (o.shared && backend === 'lease') throw new LockError('ENOTSUP', abs, 'shared locks need the kernel backend');
    if (!o.create && backend === 'lease') throw new LockError('ENOTSUP', abs, '`create: false` needs the kernel backend');
    pid = checkPid(o, abs);
    o.signal?.throwIfAborted();
    // The common case, kept short (it is what a hand-off runs after the
    // wake-up): a kernel lock taken at once, or one wait on a pooled thread
    // that also checks the inode and writes the record before it reports,
    // then one promise hop to the caller. Everything else (waiters of this
    // process queued ahead, a file replaced meanwhile, a lease file, test
    // hooks) takes the general path below.
    if (backend === 'kernel' && !hooks.afterOpen && !(wait && queued(abs))) {
      const k = lockKernelNow(abs, o, wait, o.shared ? undefined : pid);
      if (k && 'type' in k) return afterWait(abs, o, pid, k);
      if (k) return Promise.resolve(kernelLock(abs, k, o));
    }
  } catch (err) {
    return Promise.reject(err as Error);
  }
  return acquireSlow(abs, o, backend, pid, wait);
}

function kernelLock(abs: string, held: KernelHeld, o: Checked, kind: 'kernel' | 'flock' = 'kernel'): FileLock {
  // Another program's lock file is never deleted (docs/interop.md).
  return new FileLock(token, abs, { kind, fd: held.fd, remove: (o.removeOnRelease ?? false) && !held.foreign }, o);
}

/** The fast path's wait: this call is now first in this process's queue for `abs`. */
function afterWait(abs: string, o: Checked, pid: number, busy: KernelBusy): Promise<FileLock> {
  const turn = enqueue(abs);
  const scope = new WaitScope(o, abs);
  const done = () => {
    turn.done();
    scope.dispose();
  };
  let waiting: Promise<number>;
  try {
    waiting = waitKernel(busy, abs, scope);
  } catch (err) {
    done(); // the addon could not start the wait (ENOMEM...; the descriptor is closed)
    throw err;
  }
  return waiting.then((result) => {
    let held: KernelHeld | undefined;
    try {
      held = kernelAfterWait(busy, result, abs, o, scope);
    } catch (err) {
      done();
      throw err;
    }
    // Replaced while we waited, or a lease file: the general path decides, keeping our turn.
    if (!held) return acquireSlow(abs, o, 'kernel', pid, true, scope, turn);
    done();
    return kernelLock(abs, held, o);
  });
}

/**
 * The general path. A call that already waited on the fast path passes its
 * scope and its turn (it is first in the queue) on.
 */
async function acquireSlow(
  abs: string,
  o: Checked,
  backend: 'kernel' | 'flock' | 'lease',
  pid: number,
  wait: boolean,
  scope = wait ? new WaitScope(o, abs) : undefined,
  turn = wait ? enqueue(abs) : undefined,
): Promise<FileLock> {
  try {
    if (turn?.prev) await abortable(turn.prev, scope!.signal);
    if (backend === 'kernel' || backend === 'flock') {
      // The record is written before we return, even after a wait: written
      // later, it would meanwhile name the previous (often dead) holder to
      // readOwner, ELOCKED, status.
      return kernelLock(abs, await acquireKernel(abs, o, scope, o.shared ? undefined : pid), o, backend);
    }
    const box: { handle?: FileLock } = {};
    const lease = await acquireLease(abs, o, pid, scope && (() => scope.signal), (err) => box.handle?.lost(err));
    box.handle = new FileLock(token, abs, { kind: 'lease', lease }, o);
    return box.handle;
  } finally {
    turn?.done();
    scope?.dispose();
  }
}

/**
 * Takes the lock on `path` if it is free; never waits.
 *
 * @remarks Creates the lock file when missing (`0o644`, or `mode`), never
 * follows a symlink at `path`, and checks after locking that the locked inode
 * is still the one at `path`. A path this process already holds rejects
 * `ELOCKED` too. The kernel and flock backends write an informational owner
 * record into the file when it is empty or already holds one of our
 * records, and never write, truncate or delete another program's lock file
 * (podman's `storage.lock`, a pid file); a process re-taking a lock whose
 * record already names it does not rewrite it. The lease backend's record is
 * the lock.
 *
 * @param path - the lock file
 * @param options - see {@link LockOptions}; `timeout`/`signal` only matter to `lock()`
 * @returns the held lock
 * @throws `LockError` `ELOCKED` (with `owner` when known; its message names
 * the holder: `'<path>' is locked by pid 4242 on build-7 (kernel, held 3.2 s)`,
 * or `held by this process`), `ENOTSUP`, `ESRCH` (bad `pid`); OS errors
 * (`ENOENT` without `parents`, `EACCES`, `EROFS`, `ENOSPC`, `ENAMETOOLONG`,
 * `ELOOP` for a symlink...) with `code` and `path` (with `parents`, the path
 * of the directory that could not be created); `TypeError` for bad
 * arguments. Every error is a rejection, never a synchronous throw.
 *
 * @example
 * ```ts
 * try {
 *   await using held = await tryLock('/var/lib/store/gc.lock');
 *   await collectGarbage();
 * } catch (err) {
 *   if (!isLockError(err, 'ELOCKED')) throw err;
 *   console.log(`gc already running (pid ${err.owner?.pid})`);
 * }
 * ```
 */
export function tryLock(path: string, options?: LockOptions): Promise<FileLock> {
  return acquire(path, options, false);
}

/**
 * Takes the lock on `path`, waiting while someone else holds it.
 *
 * @remarks Waiting never blocks the event loop and never occupies libuv's
 * threadpool: a kernel wait blocks a pooled native thread, which the
 * kernel wakes the moment the holder lets go (no JS timer runs meanwhile,
 * even with `timeout`); lease waits poll every `pollInterval` ms. Waiters of
 * this process on one path are served in call order. Inside
 * `withLock(path)` itself, `lock(path)` rejects `ELOCKED` at once instead of
 * deadlocking. Nothing (timer, listener, handle) is left behind once the
 * promise settles; a wait thread that stays idle exits after 2 s.
 *
 * Bounding the wait: `timeout` is in **milliseconds** (the `xstage`
 * command line's `--timeout` is in seconds) and rejects a `LockError` with
 * code `ETIMEDOUT`; an aborted `signal` rejects with `signal.reason` itself,
 * not a `LockError` (the web platform's rule: a `DOMException` named
 * `AbortError` unless `abort(reason)` gave one). Test with
 * `isLockError(err, 'ETIMEDOUT')` and `err === signal.reason`.
 *
 * @param path - the lock file
 * @param options - see {@link LockOptions}; `timeout` (ms) and `signal` bound the wait
 * @returns the held lock
 * @throws `LockError` `ETIMEDOUT` (after `timeout` ms), `ELOCKED` (inside
 * `withLock` of the same path), `ENOTSUP`, `ESRCH`; `signal.reason` when
 * the signal aborts; OS errors with `code` and `path`; `TypeError` for bad
 * arguments.
 *
 * @example
 * ```ts
 * const held = await lock('/var/lib/store/layers.lock', { timeout: 10_000 }); // 10 s
 * try {
 *   await rewriteLayers();
 * } finally {
 *   await held.release();
 * }
 * ```
 *
 * @example
 * ```ts
 * try {
 *   await using held = await lock(path, { timeout: 5_000, signal: shutdown.signal });
 * } catch (err) {
 *   if (isLockError(err, 'ETIMEDOUT')) console.log('still busy after 5 s');
 *   else if (err === shutdown.signal.reason) console.log('shutting down');
 *   else throw err;
 * }
 * ```
 */
export function lock(path: string, options?: LockOptions): Promise<FileLock> {
  return acquire(path, options, true);
}

/**
 * Runs `fn` while holding the lock on `path` (waiting for it like
 * {@link lock}), and always releases it afterwards.
 *
 * @remarks Inside `fn`, `lock(path)` and `tryLock(path)` of the same path
 * reject `ELOCKED` at once (detected with `AsyncLocalStorage`) rather than
 * deadlock.
 *
 * @param path - the lock file
 * @param fn - the critical section; receives the held lock (pass `held.signal` to its I/O)
 * @param options - see {@link LockOptions}
 * @returns what `fn` returns
 * @throws what {@link lock} throws, what `fn` throws, and `TypeError` when `fn` is not a function
 *
 * @example
 * ```ts
 * const n = await withLock('/var/lib/store/counter.lock', async () => {
 *   const next = Number(await readFile(counter, 'utf8')) + 1;
 *   await writeFile(counter, String(next));
 *   return next;
 * });
 * ```
 */
export async function withLock<T>(path: string, fn: (held: FileLock) => T | PromiseLike<T>, options?: LockOptions): Promise<T> {
  if (typeof fn !== 'function') throw new TypeError(`Expected \`fn\` to be a function, got ${show(fn)}`);
  const held = await acquire(path, options, true);
  const outer = inside.getStore();
  const paths = new Set(outer);
  paths.add(held.path);
  try {
    return await inside.run(paths, () => fn(held));
  } finally {
    await held.release();
  }
}

/** Options of {@link createLocked}. */
export interface CreateLockedOptions {
  /** Permission bits of the new file (the umask applies). @defaultValue `0o600` */
  mode?: number | undefined;
  /** How many fresh names to try on collisions and lock races. @defaultValue `1000` */
  attempts?: number | undefined;
  /** Delete the file when the lock is released (while still holding it). @defaultValue `true` */
  removeOnRelease?: boolean | undefined;
}

/**
 * Creates a new, uniquely named lock file in `dir`, already locked (kernel
 * backend) and carrying its owner record before it becomes visible under its
 * final name. The building block of `@x/staging`'s `createAndLock`.
 *
 * @remarks The file is created unnamed (`O_TMPFILE`), locked, given its
 * owner record, then linked as `dir/nameFor()`, which never replaces
 * anything, so no other process can lock it between creation and our lock.
 * Where the filesystem has no `O_TMPFILE` (NFS, most FUSE filesystems) it is
 * created exclusively (`O_EXCL`) under a hidden name (`.xlock-*.tmp`) and
 * renamed without replacing instead (on a FUSE filesystem that refuses
 * `RENAME_NOREPLACE`, a rename after checking the name is free: a file
 * created under the same name in that instant would be replaced;
 * docs/staging-protocol.md). A taken name retries with a new one, up
 * to `attempts`; other errors fail at once and leave no file behind. A crash
 * before the link leaves nothing with `O_TMPFILE`; without it, a crash
 * between the create and the rename can leave a hidden `.xlock-*.tmp` file: it is unlocked, so
 * a sweep may delete it. The descriptor of a file created unnamed keeps the
 * kernel's name for it in `/proc/<pid>/fd` (`<dir>/#<inode> (deleted)`),
 * although the file is linked under its name.
 *
 * @param dir - an existing directory
 * @param nameFor - returns a candidate file name (no path separators); called once per attempt
 * @param options - `mode`, `attempts`, `removeOnRelease`
 * @returns the held lock; its `path` is the final name
 * @throws `EEXIST` (OS-style) when every attempt found its name taken;
 * `ENOTSUP` without the addon; OS errors (`ENOENT`, `EACCES`, `ENOTDIR`,
 * `ENOLCK`) at once; `TypeError` for bad arguments.
 *
 * @example
 * ```ts
 * const held = await createLocked('/var/lib/store/tmp', () => `lock-${randomUUID()}`);
 * console.log('staging under', held.path);
 * await held.release(); // deletes it
 * ```
 */
export async function createLocked(dir: string, nameFor: () => string, options?: CreateLockedOptions): Promise<FileLock> {
  const abs = absolute(checkPath(dir, 'dir'));
  if (typeof nameFor !== 'function') throw new TypeError(`Expected \`nameFor\` to be a function, got ${show(nameFor)}`);
  if (options !== undefined && (typeof options !== 'object' || options === null)) {
    throw new TypeError(`Expected \`options\` to be an object, got ${show(options)}`);
  }
  const { mode = 0o600, attempts = 1000, removeOnRelease = true, ...rest } = options ?? {};
  const unknown = Object.keys(rest)[0];
  if (unknown !== undefined) throw new TypeError(`Unknown option \`${unknown}\` (known: mode, attempts, removeOnRelease)`);
  const o = checkOptions({ mode, removeOnRelease });
  if (!Number.isSafeInteger(attempts) || attempts < 1)
    throw new TypeError(`Expected \`attempts\` to be a positive integer, got ${show(attempts)}`);
  const name = (): string => {
    const n = nameFor();
    if (typeof n !== 'string' || n.length === 0 || n.includes('/') || n.includes('\0') || n === '.' || n === '..') {
      throw new TypeError(`Expected \`nameFor()\` to return a file name without path separators, got ${show(n)}`);
    }
    return n;
  };
  const { fd, path } = createKernel(abs, name, o.mode, attempts);
  return new FileLock(token, path, { kind: 'kernel', fd, remove: removeOnRelease }, o);
}
