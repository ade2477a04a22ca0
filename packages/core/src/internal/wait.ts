/** Waiting helpers: a deadline + caller signal made only when a wait starts. */
import { LockError } from '../errors.js';
import type { Checked } from './options.js';

/**
 * Milliseconds on the monotonic clock. Not `performance.now()`: after a
 * wait of milliseconds everything runs cold, and that one costs about 10 µs
 * more there (docs/waiting.md).
 */
const now = (): number => Number(process.hrtime.bigint()) / 1e6;

/** The longest delay `setTimeout` honours (ms). */
const MAX_TIMER = 2 ** 31 - 1;

/**
 * Combines the caller's `signal` and `timeout` into one AbortSignal, lazily:
 * an uncontended `lock()` never creates a controller, timer or listener, and
 * a kernel wait needs none either (it takes {@link WaitScope.remaining} and
 * {@link WaitScope.callerSignal}: the native wait keeps the deadline).
 * `dispose()` removes everything it created.
 */
export class WaitScope {
  readonly #options: Checked;
  readonly #path: string;
  readonly #start = now();
  #controller: AbortController | undefined;
  #timer: NodeJS.Timeout | undefined;
  #onAbort: (() => void) | undefined;

  constructor(options: Checked, path: string) {
    this.#options = options;
    this.#path = path;
  }

  /** Whether anything (a timeout, the caller's signal) can end the wait early. */
  get cancellable(): boolean {
    return this.#options.signal !== undefined || this.#options.timeout !== Infinity;
  }

  /** The caller's own signal, if any. */
  get callerSignal(): AbortSignal | undefined {
    return this.#options.signal;
  }

  /** Milliseconds left until the timeout (Infinity: none). */
  remaining(): number {
    const { timeout } = this.#options;
    return timeout === Infinity ? Infinity : Math.max(0, timeout - (now() - this.#start));
  }

  /** The error of a wait that ran out of time. */
  timeoutError(): LockError {
    return new LockError('ETIMEDOUT', this.#path, `gave up waiting for the lock after ${this.#options.timeout} ms`);
  }

  get signal(): AbortSignal {
    if (this.#controller) return this.#controller.signal;
    const controller = (this.#controller = new AbortController());
    const { signal, timeout } = this.#options;
    if (signal) {
      if (signal.aborted) controller.abort(signal.reason);
      else {
        this.#onAbort = () => controller.abort(signal.reason);
        signal.addEventListener('abort', this.#onAbort, { once: true });
      }
    }
    if (timeout !== Infinity && !controller.signal.aborted) {
      const deadline = this.#start + timeout;
      const expire = () => controller.abort(this.timeoutError());
      // A timer longer than 2^31-1 ms fires after 1 ms in Node: wait in legs.
      const arm = (left: number): void => {
        if (left <= 0) expire();
        else if (left > MAX_TIMER) this.#timer = setTimeout(() => arm(deadline - now()), MAX_TIMER);
        else this.#timer = setTimeout(expire, left);
      };
      arm(deadline - now());
    }
    return controller.signal;
  }

  dispose(): void {
    if (this.#timer) clearTimeout(this.#timer);
    if (this.#onAbort) this.#options.signal?.removeEventListener('abort', this.#onAbort);
    this.#timer = this.#onAbort = undefined;
  }
}

/** Resolves with `promise`, or rejects with `signal.reason` when it aborts first. */
export function abortable<T>(promise: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    promise.then(
      (v) => {
        signal.removeEventListener('abort', onAbort);
        resolve(v);
      },
      (e: unknown) => {
        signal.removeEventListener('abort', onAbort);
        reject(e as Error);
      },
    );
  });
}

/**
 * A place in the in-process FIFO of `lock()` waiters per path: only the head
 * of the queue contends with other processes, so waiters of one process are
 * served in the order they called. `prev` settles when it is our turn;
 * `done()` passes the turn on (after `prev`, so an aborted waiter never lets
 * the next one jump ahead of an earlier one). The promise the next waiter
 * waits on is made only when there is a next waiter.
 */
export class Turn {
  readonly prev: Promise<void> | undefined;
  readonly #key: string;
  #next: Promise<void> | undefined;
  #resolve: (() => void) | undefined;
  #passed = false;

  constructor(key: string, prev: Turn | undefined) {
    this.#key = key;
    this.prev = prev === undefined ? undefined : prev.#after();
  }

  /** Settles once this turn is passed on. */
  #after(): Promise<void> {
    if (this.#passed) return Promise.resolve();
    return (this.#next ??= new Promise<void>((resolve) => (this.#resolve = resolve)));
  }

  #pass(): void {
    if (tails.get(this.#key) === this) tails.delete(this.#key);
    this.#passed = true;
    this.#resolve?.();
  }

  /** Passes the turn on (once `prev` has settled). */
  done(): void {
    if (this.prev) void this.prev.then(() => this.#pass());
    else this.#pass();
  }
}

const tails = new Map<string, Turn>();

/** Whether `lock()` calls of this process are queued for `key` (a new one must queue behind them). */
export function queued(key: string): boolean {
  return tails.has(key);
}

/** Takes the last place in the queue for `key`. */
export function enqueue(key: string): Turn {
  const turn = new Turn(key, tails.get(key));
  tails.set(key, turn);
  return turn;
}
