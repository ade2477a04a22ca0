/** Argument checking: every bad argument is a TypeError naming it and its value. */
import { resolve, sep } from 'node:path';
import type { ChildProcess } from 'node:child_process';
import type { LockError } from '../errors.js';

/** Options of `tryLock`, `lock` and `withLock`. */
export interface LockOptions {
  /**
   * Which mechanism to use. `'auto'` picks `'kernel'` where the addon loaded
   * and the filesystem supports kernel locks, `'lease'` otherwise.
   *
   * `'flock'` takes BSD `flock(2)` locks through the same addon, with the same
   * API, error codes and owner records as `'kernel'`: it is for joining locks
   * that `flock(1)` scripts, nftban's installer and Python `filelock` hold.
   * Linux keeps flock locks apart from `fcntl`/OFD locks, so `flock(1)`
   * and podman never exclude each other; a `'flock'` lock therefore also
   * takes an OFD lock of the same mode on the same descriptor, so that two
   * of our processes that chose `'kernel'` and `'flock'` for one path still
   * exclude each other (and a `'flock'` holder excludes podman and Python
   * `lockf` too). Never chosen by `'auto'`. See docs/interop.md.
   * @defaultValue `'auto'`
   */
  backend?: 'auto' | 'kernel' | 'flock' | 'lease' | undefined;
  /** Take a shared (read) lock; several shared holders may coexist. Kernel and flock only. @defaultValue `false` */
  shared?: boolean | undefined;
  /** Create missing parent directories of the lock file. @defaultValue `false` */
  parents?: boolean | undefined;
  /**
   * Create the lock file when it is missing. With `false`, a missing file
   * (or one deleted while we lock it) rejects `ENOENT` and nothing is
   * created: for taking an existing lock file, as a recovery sweep does,
   * without ever mistaking a just-finished owner's file for an abandoned
   * one. Kernel and flock only. @defaultValue `true`
   */
  create?: boolean | undefined;
  /** Permission bits of a lock file we create (the umask applies). @defaultValue `0o644` */
  mode?: number | undefined;
  /**
   * Delete the lock file on release (while still holding it). Kernel default
   * `false`: the file is kept, as nftban and Python `filelock` do, which
   * avoids the unlink race altogether. A file holding another program's
   * content (not empty, not one of our owner records: podman's
   * `storage.lock`, a pid file) is never deleted, whatever this says: the
   * lock works, and the file is left as it was. The lease backend always
   * removes its own file.
   */
  removeOnRelease?: boolean | undefined;
  /** Lease: how long an unrefreshed lease lasts before others may take it, in ms. @defaultValue `10000` */
  staleAfter?: number | undefined;
  /** Lease: how often the holder refreshes its lease, in ms. @defaultValue `staleAfter / 4` */
  heartbeat?: number | undefined;
  /** Lease: called once when the lock is lost (taken over, deleted or replaced). Never thrown from a timer. */
  onCompromised?: ((error: LockError) => void) | undefined;
  /**
   * `lock()`: give up after this many **milliseconds**: the promise rejects
   * a `LockError` with code `ETIMEDOUT`. `0` tries once. (The `xstage run
   * --timeout` option takes seconds.) @defaultValue `Infinity`
   */
  timeout?: number | undefined;
  /**
   * `lock()`: abort the wait. The promise rejects with `signal.reason`
   * itself, not a `LockError` (the web platform's rule: an `AbortError`
   * `DOMException` unless you passed a reason to `abort()`). An already
   * aborted signal rejects at once.
   */
  signal?: AbortSignal | undefined;
  /** Lease waits: how often to re-check a held lease, in ms (kernel waits are woken by the kernel). @defaultValue `100` */
  pollInterval?: number | undefined;
  /**
   * Take the lock on behalf of another process: its id is recorded as the
   * owner instead of ours, and the lock is released when that process exits
   * (Julia's `mkpidlock(at, pid)`). A `ChildProcess` is watched through its
   * `exit` event; a number on Linux through a pidfd polled on a dedicated
   * native thread (woken the moment it exits, immune to pid reuse), elsewhere
   * by a `kill(pid, 0)` probe every 250 ms. Both backends. A process that is
   * not running rejects `ESRCH`.
   */
  pid?: number | ChildProcess | undefined;
}

const keys = new Set([
  'backend',
  'shared',
  'parents',
  'create',
  'mode',
  'removeOnRelease',
  'staleAfter',
  'heartbeat',
  'onCompromised',
  'timeout',
  'signal',
  'pollInterval',
  'pid',
]);

/** Renders a value for an error message: `` `-1` (number) ``. */
export function show(value: unknown): string {
  let text: string;
  try {
    text = typeof value === 'string' ? JSON.stringify(value) : typeof value === 'function' ? 'function' : String(value);
  } catch {
    text = Object.prototype.toString.call(value);
  }
  if (text.length > 60) text = `${text.slice(0, 57)}...`;
  return `\`${text}\` (${value === null ? 'null' : typeof value})`;
}

/** @throws TypeError naming `name` unless `value` is a non-empty string without NUL. */
export function checkPath(value: unknown, name = 'path'): string {
  if (typeof value !== 'string' || value.length === 0 || value.includes('\0')) {
    throw new TypeError(`Expected \`${name}\` to be a non-empty string without NUL bytes, got ${show(value)}`);
  }
  return value;
}

/**
 * `path` made absolute and normalized, like `path.resolve`, which costs a
 * lock cycle about 0.4 µs: a path that is already absolute and normal (no
 * empty, `.` or `..` segment, no trailing `/`) is returned as it is. POSIX
 * only: Windows paths (drive letters, `\`) always go through `resolve`.
 */
export function absolute(path: string): string {
  if (
    posix &&
    path.charCodeAt(0) === 47 /* / */ &&
    path.charCodeAt(path.length - 1) !== 47 &&
    !path.includes('//') &&
    !path.includes('/./') &&
    !path.includes('/../') &&
    !path.endsWith('/.') &&
    !path.endsWith('/..')
  ) {
    return path;
  }
  return resolve(path);
}

const posix = sep === '/';

function fail(name: string, what: string, value: unknown): never {
  throw new TypeError(`Expected \`${name}\` to be ${what}, got ${show(value)}`);
}

function bool(o: Record<string, unknown>, name: string): boolean | undefined {
  const v = o[name];
  if (v !== undefined && typeof v !== 'boolean') fail(name, 'a boolean', v);
  return v as boolean | undefined;
}

function positive(o: Record<string, unknown>, name: string, allowZero: boolean, allowInfinity: boolean): number | undefined {
  const v = o[name];
  if (v === undefined) return undefined;
  const ok = typeof v === 'number' && !Number.isNaN(v) && (allowZero ? v >= 0 : v > 0) && (allowInfinity || Number.isFinite(v));
  if (!ok) fail(name, `a ${allowZero ? 'non-negative' : 'positive'}${allowInfinity ? '' : ' finite'} number`, v);
  return v;
}

/** Options after checking, with defaults applied. */
export interface Checked {
  backend: 'auto' | 'kernel' | 'flock' | 'lease';
  shared: boolean;
  parents: boolean;
  create: boolean;
  mode: number;
  removeOnRelease: boolean | undefined;
  staleAfter: number | undefined;
  heartbeat: number | undefined;
  onCompromised: ((error: LockError) => void) | undefined;
  timeout: number;
  signal: AbortSignal | undefined;
  pollInterval: number;
  pid: number | undefined;
  child: ChildProcess | undefined;
}

const defaults: Checked = Object.freeze({
  backend: 'auto',
  shared: false,
  parents: false,
  create: true,
  mode: 0o644,
  removeOnRelease: undefined,
  staleAfter: undefined,
  heartbeat: undefined,
  onCompromised: undefined,
  timeout: Infinity,
  signal: undefined,
  pollInterval: 100,
  pid: undefined,
  child: undefined,
}) as Checked;

function isChildProcess(v: unknown): v is ChildProcess {
  return typeof v === 'object' && v !== null && typeof (v as ChildProcess).once === 'function' && 'exitCode' in v;
}

/** Checks the options object of the lock functions. */
export function checkOptions(options: unknown, extraKeys?: ReadonlySet<string>): Checked {
  if (options === undefined) return defaults;
  if (typeof options !== 'object' || options === null || Array.isArray(options)) fail('options', 'an object', options);
  const o = options as Record<string, unknown>;
  // for-in with hasOwn: Object.keys' own enumerable keys, without its array.
  for (const key in o) {
    if (!keys.has(key) && !extraKeys?.has(key) && Object.hasOwn(o, key)) {
      throw new TypeError(`Unknown option \`${key}\` (known: ${[...keys].join(', ')})`);
    }
  }
  const backend = o.backend ?? 'auto';
  if (backend !== 'auto' && backend !== 'kernel' && backend !== 'flock' && backend !== 'lease')
    fail('backend', "'auto', 'kernel', 'flock' or 'lease'", backend);
  const mode = o.mode ?? 0o644;
  if (typeof mode !== 'number' || !Number.isInteger(mode) || mode < 0 || mode > 0o7777)
    fail('mode', 'an integer from 0 to 0o7777', mode);
  const onCompromised = o.onCompromised;
  if (onCompromised !== undefined && typeof onCompromised !== 'function') fail('onCompromised', 'a function', onCompromised);
  const signal = o.signal;
  if (signal !== undefined && !(signal instanceof AbortSignal)) fail('signal', 'an AbortSignal', signal);
  let pid: number | undefined;
  let child: ChildProcess | undefined;
  if (o.pid !== undefined) {
    if (isChildProcess(o.pid)) {
      child = o.pid;
      pid = child.pid;
    } else if (typeof o.pid === 'number' && Number.isSafeInteger(o.pid) && o.pid > 0 && o.pid <= 0x7fffffff) {
      pid = o.pid;
    } else {
      fail('pid', 'a positive integer process id or a ChildProcess', o.pid);
    }
  }
  const staleAfter = positive(o, 'staleAfter', false, false);
  const heartbeat = positive(o, 'heartbeat', false, false);
  if (staleAfter !== undefined && heartbeat !== undefined && heartbeat >= staleAfter) {
    throw new TypeError(`Expected \`heartbeat\` (${heartbeat}) to be less than \`staleAfter\` (${staleAfter})`);
  }
  return {
    backend,
    shared: bool(o, 'shared') ?? false,
    parents: bool(o, 'parents') ?? false,
    create: bool(o, 'create') ?? true,
    mode,
    removeOnRelease: bool(o, 'removeOnRelease'),
    staleAfter,
    heartbeat,
    onCompromised: onCompromised as Checked['onCompromised'],
    timeout: positive(o, 'timeout', true, true) ?? Infinity,
    signal: signal as AbortSignal | undefined,
    pollInterval: positive(o, 'pollInterval', false, false) ?? 100,
    pid,
    child,
  };
}
