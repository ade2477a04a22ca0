/**
 * The kernel backend: an open descriptor holding an OFD (Linux) or flock lock;
 * the `flock` backend is the same code with flock(2) locks on every platform.
 *
 * Acquire = open(O_CREAT|O_NOFOLLOW) -> non-blocking lock -> inode re-check ->
 * owner record. All synchronous system calls through the addon (a lock cycle
 * is ~10 us of syscalls; a threadpool hop would cost 100-200 us). Only a wait
 * leaves the main thread, onto a pooled native thread.
 */
import { fstatSync, ftruncateSync, readSync, writeSync } from 'node:fs';
import { constants as fsc } from 'node:fs';
import { dirname } from 'node:path';
import { LockError, lockedError } from '../errors.js';
import { formatRecord, judgeKernelOwner, parseRecord, recordHead, RECORD_PREFIX, type LockOwner } from '../owner.js';
import { holderLiveness, selfPid } from './identity.js';
import { addon, kernelLocks, LockType, TAKE_STEP, VERIFY_FAILED, type NativeAddon } from '../platform/native.js';
import { leaseOnFile, nap } from './lease.js';
import { makeDirs } from './dirs.js';
import { hooks } from './hooks.js';
import { kernelHolders } from './proclocks.js';
import { E, osError, withPath } from './oserror.js';
import type { Checked } from './options.js';
import type { WaitScope } from './wait.js';

/** The addon, or ENOTSUP naming why it is missing. */
export function native(path: string): NativeAddon {
  if (!addon) throw new LockError('ENOTSUP', path, `kernel locks are not available in this process: ${kernelLocks.reason}`);
  return addon;
}

const never = new AbortController().signal;

type OpenOptions = Pick<Checked, 'shared' | 'parents' | 'create' | 'mode'>;

/** open(2) flags of a lock file: never following a symlink. */
function openFlags(o: OpenOptions): number {
  return (o.shared ? fsc.O_RDONLY : fsc.O_RDWR) | (o.create ? fsc.O_CREAT : 0) | fsc.O_NOFOLLOW;
}

/**
 * Whether an open that gave `r` should be tried again because `parents`
 * asks for the missing directories of `path`, which are then created.
 */
function madeParents(r: number, path: string, o: OpenOptions): boolean {
  if (r !== E.ENOENT || !o.parents || !o.create) return false;
  makeDirs(dirname(path));
  return true;
}

/** Opens (creating if needed) the lock file; never follows a symlink. */
export function openLockFile(path: string, o: OpenOptions, extraFlags = 0): number {
  const a = native(path);
  const flags = openFlags(o) | extraFlags;
  let fd = a.open(path, flags, o.mode);
  if (madeParents(fd, path, o)) fd = a.open(path, flags, o.mode);
  if (fd < 0) throw osError(fd, 'open', path);
  return fd;
}

/**
 * Who holds the lock on `fd`'s file, for an ELOCKED error: the owner record
 * if it names a holder the kernel still sees, else the pid the kernel gives
 * (F_OFD_GETLK or /proc/locks for a classic POSIX holder such as podman or
 * python's lockf; /proc/locks for a flock(2) holder). See judgeKernelOwner.
 */
export function ownerOf(fd: number, type: LockType): LockOwner | undefined {
  let record: LockOwner | null = null;
  let holders;
  const flock = (type & LockType.Flock) !== 0;
  const getlk = flock || !addon ? -2 : addon.getlk(fd, type);
  try {
    const buf = Buffer.allocUnsafe(2048);
    const n = readSync(fd, buf, 0, buf.length, 0);
    const st = fstatSync(fd, { bigint: true });
    record = parseRecord(buf.toString('utf8', 0, n), Number(st.mtimeMs));
    // /proc/locks costs about 1 us per lock held on the whole system: read
    // it only when F_OFD_GETLK and the record cannot name the holder (a
    // sweep meets an ELOCKED per live entry; thousands of them must not each
    // read the whole list). A POSIX holder is named by F_OFD_GETLK itself.
    const recordNames = record?.pid !== undefined && record.version !== undefined && holderLiveness(record) !== 'dead';
    if (flock || getlk === -2 || (getlk === -1 && !recordNames)) holders = kernelHolders(st.dev, st.ino);
  } catch {
    // write-only or vanished: the owner stays unknown
  }
  // Only the locks of our kind conflict with us: flock and fcntl/OFD locks are separate.
  const mine = holders?.filter((h) => (h.kind === 'flock') === flock);
  const owner = judgeKernelOwner(record, mine, getlk);
  if (!owner) return undefined;
  // The error carries who holds it, not the whole kernel view.
  const { held: _held, shared: _shared, holders: _holders, ...rest } = owner;
  return rest;
}

/** A rendered owner record; bytes before `same` name the holder, `createdAt`'s digits follow. */
export interface KernelRecord {
  readonly buf: Buffer;
  readonly same: number;
}

const selfRecords = new Map<string, { buf: Buffer; same: number }>();
function render(pid: number, backend: 'kernel' | 'flock'): { buf: Buffer; same: number } {
  return { buf: Buffer.from(formatRecord(backend, pid)), same: Buffer.byteLength(recordHead(backend, pid)) };
}

/**
 * The owner record. Our own is rendered once; the addon writes the current
 * time over its `createdAt` digits each time it writes it (so does
 * {@link writeRecord}).
 */
export function kernelRecord(pid: number, backend: 'kernel' | 'flock' = 'kernel'): KernelRecord {
  if (pid !== selfPid) return render(pid, backend);
  let rec = selfRecords.get(backend);
  if (!rec) selfRecords.set(backend, (rec = render(pid, backend)));
  return rec;
}

/**
 * verify() with the owner record: the inode check, then the record is
 * written unless the file is a lease (2) or another program's (3: see
 * xlock.c's verify_record), or already names this holder.
 */
export function verifyAndRecord(a: NativeAddon, fd: number, path: string, rec: KernelRecord | undefined): number {
  return rec ? a.verify(fd, path, rec.buf, RECORD_PREFIX.length, rec.same) : a.verify(fd, path);
}

/** Whether the file on `fd` holds another program's bytes (non-empty, not our record). */
function foreignContent(fd: number): boolean {
  const buf = Buffer.alloc(RECORD_PREFIX.length);
  let n: number;
  try {
    n = readSync(fd, buf, 0, buf.length, 0);
  } catch {
    return true; // cannot tell: treat as not ours
  }
  return n > 0 && buf.toString('latin1', 0, n) !== RECORD_PREFIX;
}

/**
 * Blocks on a pooled native thread until the lock on `fd` is ours, the
 * scope's time is up or the caller's signal aborts; resolves the addon's
 * result (see {@link waitOutcome}). The deadline lives in the native wait: no
 * JS timer runs while waiting, and a cancel is never lost (docs/waiting.md).
 * With `verify`, the granted lock is checked against `path` and `rec` is
 * written on that thread before the promise resolves, so the hand-off runs
 * as little JavaScript as possible after the wake-up. No async function
 * here: each promise hop costs on the hand-off.
 */
function nativeWait(
  a: NativeAddon,
  fd: number,
  type: LockType,
  scope: WaitScope,
  path: string,
  verify: boolean,
  rec: KernelRecord | undefined,
): Promise<number> {
  const left = scope.remaining();
  const ms = left === Infinity ? -1 : left;
  const pending = !verify
    ? a.wait(fd, type, ms)
    : rec
      ? a.wait(fd, type, ms, path, rec.buf, RECORD_PREFIX.length, rec.same)
      : a.wait(fd, type, ms, path);
  // Without a signal nothing but the deadline can end the wait: no listener.
  const signal = scope.callerSignal;
  if (!signal) return pending;
  const onAbort = () => a.cancel(fd);
  if (signal.aborted) onAbort();
  else signal.addEventListener('abort', onAbort, { once: true });
  return pending.then((result) => {
    signal.removeEventListener('abort', onAbort);
    return result;
  });
}

/** Not verified yet (a wait without `verify`, or a lock taken at once). */
const UNVERIFIED = -1;

/**
 * What a wait's `result` means: the verify() result when the lock on `fd`
 * is ours (UNVERIFIED if the wait did not verify); throws why not otherwise.
 */
function waitOutcome(result: number, fd: number, type: LockType, scope: WaitScope, path: string, verified: boolean): number {
  if (result >= 0) {
    const signal = scope.callerSignal;
    if (signal?.aborted) {
      native(path).setlk(fd, (type & LockType.Flock) as LockType); // got it as the abort came: the abort wins
      throw signal.reason as Error;
    }
    return verified ? result : UNVERIFIED;
  }
  if (result <= -VERIFY_FAILED) throw osError(result + VERIFY_FAILED, 'fstat', path);
  if (result === E.ECANCELED && scope.callerSignal?.aborted) throw scope.callerSignal.reason as Error;
  if (result === E.ETIMEDOUT) throw scope.timeoutError();
  throw osError(result, type & LockType.Flock ? 'flock' : 'fcntl', path);
}

/** What {@link acquireKernel} took: the descriptor, and whether the file is another program's. */
export interface KernelHeld {
  fd: number;
  /**
   * The file holds another program's bytes (not empty, not our record): no
   * record was written into it, and it must not be deleted on release.
   */
  foreign: boolean;
}

/**
 * Takes the kernel lock (OFD, or flock(2) for `backend: 'flock'`) on `path`
 * and returns the descriptor holding it. Without `wait`, a held lock rejects
 * ELOCKED at once.
 *
 * Invariant (docs/contract.md 3.3 item 2): the returned descriptor's inode is the one at
 * `path` and is linked. A waiter that opened the file before its holder
 * deleted it wakes up holding a dead inode: it closes it and starts over.
 *
 * Foreign files (docs/interop.md): the owner record of `recordOf` goes only
 * into an empty file or one holding one of our records; another program's
 * lock file (podman's last-writer token, a pid file) is never written.
 */
export async function acquireKernel(path: string, o: Checked, wait?: WaitScope, recordOf?: number): Promise<KernelHeld> {
  const a = native(path);
  const flock = o.backend === 'flock' ? LockType.Flock : 0;
  const type = ((o.shared ? LockType.Shared : LockType.Exclusive) | flock) as LockType;
  // The owner record of `recordOf` is written by the same native call as
  // the inode check, stamped with the time we got the lock.
  const rec = recordOf === undefined ? undefined : kernelRecord(recordOf, flock ? 'flock' : 'kernel');
  for (let replaced = 0; ;) {
    const fd = openLockFile(path, o);
    let ok = false;
    try {
      if (hooks.afterOpen) await hooks.afterOpen(path);
      let v = UNVERIFIED;
      const r = a.setlk(fd, type);
      if (r === E.EAGAIN) {
        if (!wait) throw lockedError(path, ownerOf(fd, type));
        // The last lock taken is verified on the wait's thread (flock: the OFD lock follows).
        v = waitOutcome(await nativeWait(a, fd, type, wait, path, !flock, rec), fd, type, wait, path, !flock);
      } else if (r < 0) throw osError(r, flock ? 'flock' : 'fcntl', path);
      if (flock) {
        // The same mode as an OFD lock on the same descriptor: a process that
        // chose 'kernel' for this path is excluded too (two backends never
        // make two holders). flock(1) and Python see only the flock lock.
        const ofd = (type & ~LockType.Flock) as LockType;
        const r2 = a.setlk(fd, ofd);
        if (r2 === E.EAGAIN) {
          if (!wait) throw lockedError(path, ownerOf(fd, ofd));
          v = waitOutcome(await nativeWait(a, fd, ofd, wait, path, true, rec), fd, ofd, wait, path, true);
        } else if (r2 < 0) throw osError(r2, 'fcntl', path);
      }
      if (v === UNVERIFIED) v = verifyAndRecord(a, fd, path, rec);
      if (v < 0) throw osError(v, 'fstat', path);
      if (v === 2) {
        // A lease file: its holder takes no kernel lock, so judge the lease.
        const lease = leaseOnFile(path, fd, o);
        if (!lease.held) {
          // A dead lease's record is one of ours: replaced by our record.
          if (rec) writeRecord(fd, rec, path);
          ok = true;
          return { fd, foreign: false };
        }
        if (!wait) throw lockedError(path, lease.owner);
        a.close(fd);
        ok = true; // closed already
        await nap(o.pollInterval, wait.cancellable ? wait.signal : never, {}, lease.pid);
        continue;
      }
      const held = settle(fd, v, rec, o);
      if (held) {
        ok = true;
        return held;
      }
    } finally {
      if (!ok) a.close(fd);
    }
    // Deleted or replaced while we waited: retry on what is at the path now.
    if (++replaced >= 1000) throw new LockError('ECOMPROMISED', path, `'${path}' kept being replaced while locking it`);
  }
}

/** What a lock taken on `fd` with verify() result `v` amounts to (undefined: 1 or 2, the general path decides). */
function settle(fd: number, v: number, rec: KernelRecord | undefined, o: Checked): KernelHeld | undefined {
  if (v !== 0 && v !== 3) return undefined;
  // Without a record (shared locks) the content is only checked when it
  // matters: before a removal on release.
  return { fd, foreign: v === 3 || (rec === undefined && o.removeOnRelease === true && foreignContent(fd)) };
}

/** native take() with our record, if any. */
function takeFile(
  a: NativeAddon,
  path: string,
  flags: number,
  mode: number,
  type: LockType,
  rec: KernelRecord | undefined,
): number {
  return rec ? a.take(path, flags, mode, type, rec.buf, RECORD_PREFIX.length, rec.same) : a.take(path, flags, mode, type);
}

/** A first attempt that found the lock held elsewhere: `fd` stays open for {@link waitKernel}. */
export interface KernelBusy {
  readonly fd: number;
  readonly type: LockType;
  readonly rec: KernelRecord | undefined;
}

/**
 * The common case of {@link acquireKernel} (the OFD kernel backend),
 * synchronous: open, lock without waiting, verify and record. Returns what
 * it took; or, when the lock is held elsewhere and `wait`, the open
 * descriptor to hand to {@link waitKernel}; or undefined (nothing left open)
 * when the file was replaced meanwhile or is a lease file: then
 * {@link acquireKernel} decides. Throws ELOCKED (without `wait`) and OS errors.
 */
export function lockKernelNow(path: string, o: Checked, wait: boolean, recordOf?: number): KernelHeld | KernelBusy | undefined {
  const a = native(path);
  const type = o.shared ? LockType.Shared : LockType.Exclusive;
  const rec = recordOf === undefined ? undefined : kernelRecord(recordOf);
  const flags = openFlags(o);
  // One native call: open, lock, inode check and record (native/take.c).
  let r = takeFile(a, path, flags, o.mode, type, rec);
  if (madeParents(r, path, o)) r = takeFile(a, path, flags, o.mode, type, rec);
  if (r < 0) {
    const step = Math.floor(-r / TAKE_STEP);
    throw osError(-(-r % TAKE_STEP), step === 0 ? 'open' : step === 1 ? 'fcntl' : 'fstat', path);
  }
  const fd = r >>> 3;
  const v = r & 7;
  if (v === 4) {
    if (wait) return { fd, type, rec };
    try {
      throw lockedError(path, ownerOf(fd, type));
    } finally {
      a.close(fd);
    }
  }
  const held = settle(fd, v, rec, o);
  if (held === undefined) a.close(fd);
  return held;
}

/**
 * Waits for the lock {@link lockKernelNow} found held; the inode check and
 * the record run on the wait's thread. Resolves the addon's result, for
 * {@link kernelAfterWait}, which closes the descriptor if need be. Throws
 * (descriptor closed) when the wait cannot start.
 */
export function waitKernel(busy: KernelBusy, path: string, scope: WaitScope): Promise<number> {
  const a = native(path);
  try {
    return nativeWait(a, busy.fd, busy.type, scope, path, true, busy.rec);
  } catch (err) {
    a.close(busy.fd);
    throw err;
  }
}

/**
 * What {@link waitKernel}'s result amounts to: what was taken, or undefined
 * (descriptor closed) when {@link acquireKernel} must decide (the file was
 * replaced while we waited, or is a lease file). Throws (descriptor closed)
 * when the wait failed: timeout, abort, OS error.
 */
export function kernelAfterWait(
  busy: KernelBusy,
  result: number,
  path: string,
  o: Checked,
  scope: WaitScope,
): KernelHeld | undefined {
  let held: KernelHeld | undefined;
  try {
    held = settle(busy.fd, waitOutcome(result, busy.fd, busy.type, scope, path, true), busy.rec, o);
  } finally {
    if (held === undefined) native(path).close(busy.fd);
  }
  return held;
}

/** Replaces the content of our lock file with our record, stamped now (a lease we took over). */
function writeRecord(fd: number, rec: KernelRecord, path: string): void {
  const now = String(Date.now());
  // 13 digits until the year 2286 (the addon stamps the same way).
  if (now.length === 13) rec.buf.write(now, rec.same, 'latin1');
  try {
    ftruncateSync(fd, 0);
    writeSync(fd, rec.buf, 0, rec.buf.length, 0);
  } catch (err) {
    throw withPath(err, path);
  }
}

/** Releases: delete first when asked (only while the path is still our inode), then close. */
export function releaseKernel(fd: number, path: string, remove: boolean): void {
  const a = native(path);
  let error: Error | undefined;
  if (remove) {
    const r = a.unlinkHeld(fd, path);
    if (r < 0) error = osError(r, 'unlink', path);
  }
  const c = a.close(fd);
  if (!error && c < 0) error = osError(c, 'close', path);
  if (error) throw error;
}
