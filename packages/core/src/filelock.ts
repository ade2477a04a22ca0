/**
 * The handle of a held lock, whatever the backend: what `tryLock`, `lock`,
 * `withLock` and `createLocked` (lock.ts) give, and how it lets go.
 */
import type { ChildProcess } from 'node:child_process';
import { LockError } from './errors.js';
import { selfPid } from './internal/identity.js';
import { releaseKernel } from './internal/kernel.js';
import type { Lease } from './internal/lease.js';
import type { Checked } from './internal/options.js';
import { watchPid } from './internal/pidwatch.js';

/** @internal Only lock.ts may construct a {@link FileLock}. */
export const token = Symbol('FileLock');

/** @internal How a held lock lets go: kernel or flock (a descriptor) or lease (a file we own). */
export type Holding = { kind: 'kernel' | 'flock'; fd: number; remove: boolean } | { kind: 'lease'; lease: Lease };

/**
 * A held lock. Created by {@link tryLock}, {@link lock} and {@link withLock}.
 *
 * @remarks `release()` is idempotent, and `await using` releases at the end
 * of the scope. `signal` aborts when the lock is released or lost, so a
 * critical section can hand it to its own I/O.
 *
 * @example
 * ```ts
 * await using held = await lock('/var/lib/store/layers.lock', { timeout: 5_000 });
 * await writeFile(tmp, data, { signal: held.signal });
 * ```
 */
export class FileLock {
  /** The absolute path of the lock file. */
  readonly path: string;
  /** The backend that holds the lock. */
  readonly backend: 'kernel' | 'flock' | 'lease';
  #holding: Holding | null;
  #lost = false;
  #controller: AbortController | undefined;
  #releasing: Promise<void> | undefined;
  #onCompromised: ((error: LockError) => void) | undefined;
  #child: ChildProcess | undefined;
  #onChildExit: (() => void) | undefined;
  #unwatch: (() => void) | undefined;

  /** @internal Use {@link tryLock}, {@link lock} or {@link withLock}. */
  constructor(key: typeof token, path: string, holding: Holding, o: Checked) {
    if (key !== token) throw new TypeError('FileLock is created by tryLock(), lock() or withLock()');
    this.path = path;
    this.backend = holding.kind;
    this.#holding = holding;
    this.#onCompromised = o.onCompromised;
    if (o.child) {
      this.#child = o.child;
      this.#onChildExit = () => void this.release().catch(() => undefined);
      o.child.once('exit', this.#onChildExit);
    } else if (o.pid !== undefined && o.pid !== selfPid) {
      // On behalf of another process: released when it exits.
      this.#unwatch = watchPid(o.pid, () => void this.release().catch(() => undefined));
    }
  }

  /** An AbortSignal that aborts when the lock is released or lost. */
  get signal(): AbortSignal {
    if (!this.#controller) {
      this.#controller = new AbortController();
      if (!this.#holding) this.#controller.abort(this.#releasedError());
    }
    return this.#controller.signal;
  }

  /**
   * The descriptor that holds a kernel or flock lock (undefined for a lease,
   * and once released).
   *
   * @remarks For handing the lock to a child process: a child that inherits
   * the descriptor (Node's `spawn` with `stdio: [..., held.fd]` makes it the
   * child's fd 3) shares the lock, which then lasts until both this handle
   * is released and the child has closed it or exited, as with `flock(1)`.
   * Do not close it yourself: `release()` does.
   */
  get fd(): number | undefined {
    const h = this.#holding;
    return h && h.kind !== 'lease' ? h.fd : undefined;
  }

  /**
   * Whether the lock is still held by this handle: false once released, and
   * once lost (a lease taken over, deleted or replaced; `signal` says why).
   */
  get held(): boolean {
    return this.#holding !== null && !this.#lost;
  }

  #releasedError(): LockError {
    return new LockError('ERELEASED', this.path, `the lock on '${this.path}' was released`);
  }

  /**
   * Releases the lock. Idempotent: later calls resolve at once.
   * @throws OS errors of deleting the file (`removeOnRelease`); the lock is released anyway.
   */
  release(): Promise<void> {
    this.#releasing ??= this.#release();
    return this.#releasing;
  }

  #release(): Promise<void> {
    const holding = this.#holding;
    this.#holding = null;
    if (this.#child && this.#onChildExit) this.#child.off('exit', this.#onChildExit);
    this.#unwatch?.();
    if (holding?.kind === 'lease') return this.#releaseLease(holding.lease);
    // Kernel and flock: synchronous, so no async function (a cycle's cost).
    try {
      if (holding) releaseKernel(holding.fd, this.path, holding.remove);
    } catch (err) {
      return Promise.reject(err as Error);
    } finally {
      this.#controller?.abort(this.#releasedError());
    }
    return Promise.resolve();
  }

  async #releaseLease(lease: Lease): Promise<void> {
    try {
      await lease.release();
    } finally {
      this.#controller?.abort(this.#releasedError());
    }
  }

  /** @internal The lease backend reports a lost lock here; never throws. */
  lost(error: LockError): void {
    if (!this.#holding || this.#lost) return;
    this.#lost = true;
    this.#controller ??= new AbortController();
    this.#controller.abort(error);
    try {
      this.#onCompromised?.(error);
    } catch (err) {
      // A throwing callback must not crash the process from a timer.
      process.emitWarning(`onCompromised threw: ${String(err)}`, 'LockWarning');
    }
  }

  /** Releases the lock; lets `await using held = await lock(p)` work. */
  [Symbol.asyncDispose](): Promise<void> {
    return this.release();
  }
}
