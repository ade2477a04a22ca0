import type { LockOwner } from './owner.js';
import { holderLiveness } from './internal/identity.js';

/**
 * The codes a {@link LockError} can carry.
 *
 * - `ELOCKED`: held by someone else (`owner` is filled in when known).
 * - `ETIMEDOUT`: a wait ran out of time.
 * - `ECOMPROMISED`: a lease was lost, or the lock file was replaced or deleted under us.
 * - `ERELEASED`: the handle was used after it was released.
 * - `ENOTSUP`: the platform cannot give the backend or mode asked for.
 * - `ESRCH`: the `pid` option names a process that is not running.
 * - `EUNAVAILABLE`: a lock service (etcd, in @x/etcd) cannot be reached or has no quorum.
 */
export type LockErrorCode = 'ELOCKED' | 'ETIMEDOUT' | 'ECOMPROMISED' | 'ERELEASED' | 'ENOTSUP' | 'ESRCH' | 'EUNAVAILABLE';

const brand = Symbol.for('@x/core.LockError');

/** Options of the {@link LockError} constructor. */
export interface LockErrorOptions {
  /** The holder, when it is known. */
  owner?: LockOwner | null | undefined;
  /** The underlying error (an OS error, an abort reason). */
  cause?: unknown | undefined;
}

/**
 * The error of every lock operation that fails for a reason other than bad
 * arguments (a `TypeError`) or a plain OS error (which keeps its errno `code`
 * and carries `path`).
 *
 * @remarks Test `code`, never the message. {@link isLockError} recognises
 * instances from another copy of this package too.
 *
 * @example
 * ```ts
 * try {
 *   await tryLock('/var/lib/store/layers.lock');
 * } catch (err) {
 *   if (isLockError(err) && err.code === 'ELOCKED') console.log('busy, held by pid', err.owner?.pid);
 *   else throw err;
 * }
 * ```
 */
export class LockError extends Error {
  /** What went wrong, as one of {@link LockErrorCode}. */
  readonly code: LockErrorCode;
  /** The lock path the error is about. */
  readonly path: string;
  /** The holder, when the error is `ELOCKED` and the lock file names one. */
  readonly owner?: LockOwner | undefined;

  /**
   * @param code - one of {@link LockErrorCode}
   * @param path - the lock path
   * @param message - a sentence for humans; the code is prefixed to it
   * @param options - `owner` and `cause`
   */
  constructor(code: LockErrorCode, path: string, message: string, options: LockErrorOptions = {}) {
    super(`${code}: ${message}`, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = 'LockError';
    this.code = code;
    this.path = path;
    if (options.owner) this.owner = options.owner;
    Object.defineProperty(this, brand, { value: true });
  }
}

/**
 * Whether `value` is a {@link LockError}, optionally with the given `code`.
 * Works across copies of the package (it checks a brand, not the prototype).
 *
 * @example
 * ```ts
 * if (isLockError(err, 'ELOCKED')) return 'busy';
 * ```
 */
export function isLockError(value: unknown, code?: LockErrorCode): value is LockError {
  return (
    typeof value === 'object' &&
    value !== null &&
    (value as Record<symbol, unknown>)[brand] === true &&
    (code === undefined || (value as LockError).code === code)
  );
}

/** A duration for an error message: `850 ms`, `3.2 s`, `4 min 10 s`, `2 h 5 min`. */
function duration(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  if (ms < 60_000) return `${(ms / 1000).toFixed(1)} s`;
  const s = Math.floor(ms / 1000);
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  return `${Math.floor(s / 3600)} h ${Math.floor(s / 60) % 60} min`;
}

/**
 * The `ELOCKED` error of both backends, naming the holder when it is known:
 * `'/x/a.lock' is locked by pid 4242 on build-7 (kernel, held 3.2 s)`, or
 * `'/x/a.lock' is held by this process (kernel, held 3.2 s)`.
 * @internal
 */
export function lockedError(path: string, owner: LockOwner | null | undefined): LockError {
  const details: string[] = [];
  if (owner?.backend) details.push(owner.backend);
  if (owner?.startedAt !== undefined) details.push(`held ${duration(Math.max(0, Date.now() - owner.startedAt))}`);
  const tail = details.length > 0 ? ` (${details.join(', ')})` : '';
  let who: string;
  if (!owner?.pid) who = 'is locked by another holder';
  // Only our own pid can be this process: no probe of anyone else's.
  else if (owner.pid === process.pid && holderLiveness(owner) === 'self') who = 'is held by this process';
  else who = `is locked by pid ${owner.pid}${owner.hostname ? ` on ${owner.hostname}` : ''}`;
  return new LockError('ELOCKED', path, `'${path}' ${who}${tail}`, { owner });
}
