/**
 * Helpers of the @x/core tests: settle tracking, bounded waits that turn a
 * hang into a failure, leak probes, and the extra child/worker fixtures
 * (test/fixtures/core-*.mjs). Children started here go through
 * test/helpers/child.ts, so `afterEach(reapAll)` reaps them too.
 */
import { createHook } from 'node:async_hooks';
import type { ChildProcess } from 'node:child_process';
import { getEventListeners, once } from 'node:events';
import { Worker } from 'node:worker_threads';
import { expect } from 'vitest';
import { LockError } from '@x/core';
import { hooks } from '@x/core/testing';
import { fixture, start, type Child } from './child.js';

/** Whether a promise has settled yet; attaching it also marks the promise handled. */
export function track(promise: Promise<unknown>): { settled: boolean } {
  const state = { settled: false };
  promise.then(
    () => (state.settled = true),
    () => (state.settled = true),
  );
  return state;
}

/** Resolves like `promise`, or rejects when it takes more than `ms` (a hang guard, not a timing assertion). */
export async function within<T>(promise: Promise<T>, ms: number, what = 'operation'): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const guard = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error(`${what} did not settle within ${ms} ms`)), ms);
  });
  try {
    return await Promise.race([promise, guard]);
  } finally {
    clearTimeout(timer);
  }
}

/** The rejection reason of `promise`; fails the test if it fulfils. */
export async function rejectionOf(promise: Promise<unknown>): Promise<unknown> {
  try {
    await promise;
  } catch (err) {
    return err;
  }
  throw new Error('expected a rejection, but the promise fulfilled');
}

/** The `LockError` `promise` rejects with (asserts `instanceof LockError`). */
export async function lockErrorOf(promise: Promise<unknown>): Promise<LockError> {
  const err = await rejectionOf(promise);
  expect(err).toBeInstanceOf(LockError);
  return err as LockError;
}

/** An OS-style error (`code`, `path`). */
export async function osErrorOf(promise: Promise<unknown>): Promise<NodeJS.ErrnoException> {
  const err = await rejectionOf(promise);
  expect(err).toBeInstanceOf(Error);
  return err as NodeJS.ErrnoException;
}

/**
 * Counts the timers created after `timerProbe()` that are still pending.
 * (Counting `process.getActiveResourcesInfo()` instead is noisy: the test
 * runner's own timers come and go.) `stop()` disables the hook.
 */
export function timerProbe(): { pending(): Promise<number>; stop(): void } {
  const live = new Set<number>();
  const hook = createHook({
    init(id, type) {
      if (type === 'Timeout') live.add(id);
    },
    destroy(id) {
      live.delete(id);
    },
  }).enable();
  return {
    async pending() {
      // destroy hooks of cleared timers run asynchronously: let them land.
      await new Promise((resolve) => setImmediate(resolve));
      await new Promise((resolve) => setImmediate(resolve));
      return live.size;
    },
    stop: () => void hook.disable(),
  };
}

/** How many `abort` listeners `signal` still has. */
export function abortListeners(signal: AbortSignal): number {
  return getEventListeners(signal, 'abort').length;
}

/** Resolves when `signal` aborts (at once if it already has). */
export function aborted(signal: AbortSignal): Promise<void> {
  return signal.aborted ? Promise.resolve() : once(signal, 'abort').then(() => undefined);
}

/** Resolves when `proc` has exited (at once if it already has). */
export async function exited(proc: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (proc.exitCode === null && proc.signalCode === null) await once(proc, 'exit');
  return { code: proc.exitCode, signal: proc.signalCode };
}

/** A pause that lets a broken implementation misbehave (never used "to let something acquire"). */
export const tick = (ms: number): Promise<void> => new Promise((resolve) => setTimeout(resolve, ms));

/** A child process (test/fixtures/core-hold-many.mjs) holding every path in `paths`; resolves after its `acquired` line. */
export async function holdMany(paths: string[], options: object = {}): Promise<{ child: Child; first: string }> {
  const child = start(process.execPath, [fixture('core-hold-many.mjs'), JSON.stringify(options), ...paths]);
  const first = await child.line();
  return { child, first };
}

/** A node child that stays alive until its stdin ends: a process to name in the `pid` option. */
export function idleChild(): Child {
  return start(process.execPath, ['-e', 'process.stdin.resume()']);
}

/** A worker thread running test/fixtures/core-worker.mjs. */
export interface LockWorker {
  worker: Worker;
  /** The next message's `code` ('acquired', 'released', 'waiting', or an error code). */
  next(): Promise<string>;
  /** Asks a holding worker to release and resolves once it has exited. */
  release(): Promise<void>;
  /** Resolves when the worker has exited (listened for from its start: an exit is never missed). */
  exited: Promise<unknown>;
}

export function lockWorker(mode: 'try' | 'hold' | 'wait', path: string, options?: object): LockWorker {
  const worker = new Worker(fixture('core-worker.mjs'), { workerData: { mode, path, options } });
  // Listened for now: a worker that answers and exits at once may be gone
  // before a listener added after its answer (that test hung now and then).
  const exited = once(worker, 'exit');
  const queue: string[] = [];
  const waiters: ((code: string) => void)[] = [];
  worker.on('message', (m: { code: string }) => {
    const w = waiters.shift();
    if (w) w(m.code);
    else queue.push(m.code);
  });
  const failed = new Promise<never>((_, reject) => {
    worker.once('error', reject);
    worker.once('exit', (code) => reject(new Error(`worker exited (${code}) before answering`)));
  });
  failed.catch(() => undefined);
  const next = (): Promise<string> =>
    queue.length > 0
      ? Promise.resolve(queue.shift()!)
      : Promise.race([new Promise<string>((resolve) => waiters.push(resolve)), failed]);
  return {
    worker,
    next,
    async release() {
      worker.postMessage('release');
      expect(await next()).toBe('released');
      await exited;
    },
    exited,
  };
}

/** Starts a worker in `try` mode and resolves the code it reports ('acquired' or an error code). */
export async function workerTry(path: string, options?: object): Promise<string> {
  const w = lockWorker('try', path, options);
  const code = await within(w.next(), 10_000, 'worker tryLock');
  await within(w.exited, 10_000, 'worker exit');
  return code;
}

/**
 * Holds every lease taker at `hooks.beforeTakeover` until `n` of them have
 * judged the lease stale, then lets them all go at once: N contenders racing
 * for one takeover. `arrived()` says how many got there.
 */
export function takeoverBarrier(n: number): { arrived: () => number } {
  let arrived = 0;
  let open!: () => void;
  const barrier = new Promise<void>((r) => (open = r));
  hooks.beforeTakeover = async () => {
    if (++arrived === n) open();
    await barrier;
  };
  return { arrived: () => arrived };
}
