/**
 * @x/core kernel backend within one process (docs/contract.md 3.2 "Same process",
 * 3.3 item 3): a held path fails fast for tryLock, in-process lock()
 * waiters are served in call order, withLock re-entry rejects ELOCKED
 * instead of deadlocking, and a path is one lock whatever its spelling.
 */
import { mkdir, readFile } from 'node:fs/promises';
import { isAbsolute, join, relative } from 'node:path';
import { afterEach, expect, test, vi } from 'vitest';
import { lock, tryLock, withLock, type FileLock } from '@x/core';
import { hooks } from '@x/core/testing';
import { holder, reapAll } from './helpers/child.js';
import { blockedWaiter } from './helpers/proclocks.js';
import { tempDir } from './helpers/tmp.js';
import { lockErrorOf, rejectionOf, tick, track, within } from './helpers/core-util.js';

const kernel = { backend: 'kernel' } as const;

afterEach(async () => {
  hooks.afterOpen = undefined;
  await reapAll();
});

test('a second tryLock of a path this process holds rejects ELOCKED at once, naming us', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const held = await tryLock(p, kernel);
  const err = await lockErrorOf(within(tryLock(p, kernel), 5_000, 'second tryLock'));
  expect(err.code).toBe('ELOCKED');
  expect(err.path).toBe(p);
  expect(err.owner?.pid).toBe(process.pid);
  // A failed attempt leaves the holder's lock and record alone.
  expect(held.signal.aborted).toBe(false);
  expect((await holder('tryLock', p, kernel)).first).toBe('error ELOCKED');
  await held.release();
});

test('lock() waiters of one process are served in call order', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const first = await tryLock(p, kernel);
  const order: number[] = [];
  const waits = Array.from({ length: 6 }, (_, i) =>
    lock(p, { ...kernel, timeout: 30_000 }).then(async (held) => {
      order.push(i);
      await tick(1);
      await held.release();
    }),
  );
  await blockedWaiter(p); // the head of the queue; the others wait behind it in-process
  expect(order).toEqual([]);
  await first.release();
  await within(Promise.all(waits), 15_000, 'the queued waiters');
  expect(order).toEqual([0, 1, 2, 3, 4, 5]);
});

test('call order wins even when the first waiter reaches the kernel last', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const first = await tryLock(p, kernel);
  // Pause waiter 0 after its open, before its lock request (hooks.afterOpen).
  let reach!: () => void;
  let resume!: () => void;
  const reached = new Promise<void>((r) => (reach = r));
  const resumed = new Promise<void>((r) => (resume = r));
  hooks.afterOpen = async (opened) => {
    if (opened !== p) return;
    hooks.afterOpen = undefined;
    reach();
    await resumed;
  };
  try {
    const order: number[] = [];
    const take = (i: number) =>
      lock(p, { ...kernel, timeout: 30_000 }).then(async (held) => {
        order.push(i);
        await held.release();
      });
    const waits = [take(0)];
    await within(reached, 5_000, 'waiter 0 reaching afterOpen');
    for (let i = 1; i < 5; i++) waits.push(take(i));
    // Not a handshake: time for a bug to show (later waiters that skipped the
    // queue would be blocked in the kernel by now).
    await tick(50);
    resume();
    await blockedWaiter(p); // waiter 0 has reached the kernel
    await first.release();
    await within(Promise.all(waits), 15_000, 'the queued waiters');
    expect(order).toEqual([0, 1, 2, 3, 4]);
  } finally {
    hooks.afterOpen = undefined;
  }
});

test('an aborted queued waiter rejects at once and the others keep their order', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const first = await tryLock(p, kernel);
  const order: number[] = [];
  const controllers = [0, 1, 2, 3].map(() => new AbortController());
  const waits = controllers.map((c, i) =>
    lock(p, { ...kernel, signal: c.signal }).then(async (held) => {
      order.push(i);
      await held.release();
    }),
  );
  const reason = new Error('changed my mind');
  controllers[1]!.abort(reason);
  expect(await within(rejectionOf(waits[1]!), 5_000, 'the aborted waiter')).toBe(reason);
  controllers[2]!.abort(reason);
  expect(await within(rejectionOf(waits[2]!), 5_000, 'the aborted waiter')).toBe(reason);
  await first.release();
  await within(Promise.all([waits[0], waits[3]]), 15_000, 'the remaining waiters');
  expect(order).toEqual([0, 3]);
});

test('inside withLock(p), lock(p), tryLock(p) and withLock(p) reject ELOCKED at once instead of deadlocking', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const q = join(d.path, 'other.lock');
  const rel = relative(process.cwd(), p);
  const inner = vi.fn();
  const result = await withLock(
    p,
    async (held) => {
      // A timeout makes a deadlock show up as ETIMEDOUT instead of hanging the test.
      expect((await lockErrorOf(lock(p, { ...kernel, timeout: 3_000 }))).code).toBe('ELOCKED');
      expect((await lockErrorOf(tryLock(p, kernel))).code).toBe('ELOCKED');
      expect((await lockErrorOf(withLock(p, inner, { ...kernel, timeout: 3_000 }))).code).toBe('ELOCKED');
      expect((await lockErrorOf(lock(rel, { ...kernel, timeout: 3_000 }))).code).toBe('ELOCKED');
      // Still detected further down the async context.
      await new Promise((resolve) => setImmediate(resolve));
      const later = await new Promise<{ pending: Promise<FileLock> }>((resolve) =>
        setTimeout(() => resolve({ pending: lock(p, { ...kernel, timeout: 3_000 }) }), 1),
      );
      expect((await lockErrorOf(later.pending)).code).toBe('ELOCKED');
      // Another path is fine, and nesting it keeps p detected.
      const nested = await withLock(q, async () => (await lockErrorOf(lock(p, { ...kernel, timeout: 3_000 }))).code, kernel);
      expect(nested).toBe('ELOCKED');
      expect(held.signal.aborted).toBe(false);
      return 'done';
    },
    kernel,
  );
  expect(result).toBe('done');
  expect(inner).not.toHaveBeenCalled();
  // Outside again: lock(p) works.
  await (await lock(p, { ...kernel, timeout: 3_000 })).release();
});

test('a lock() started outside withLock(p) waits for it instead of failing', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  let leave!: () => void;
  let entered!: () => void;
  const inside = new Promise<void>((r) => (entered = r));
  const section = withLock(
    p,
    () =>
      new Promise<void>((r) => {
        leave = r;
        entered();
      }),
    kernel,
  );
  await inside;
  const outside = lock(p, { ...kernel, timeout: 30_000 });
  const state = track(outside);
  await tick(50);
  expect(state.settled).toBe(false);
  leave();
  await section;
  const held = await within(outside, 10_000, 'lock() after withLock ended');
  await held.release();
});

test('a relative path, a non-normalised path and the absolute path are the same lock', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const rel = relative(process.cwd(), p);
  expect(isAbsolute(rel)).toBe(false);
  const held = await tryLock(rel, kernel);
  expect(held.path).toBe(p);
  expect((await lockErrorOf(tryLock(p, kernel))).code).toBe('ELOCKED');
  expect((await lockErrorOf(tryLock(`${d.path}/sub/../x.lock`, kernel))).code).toBe('ELOCKED');
  expect((await lockErrorOf(tryLock(`${d.path}//./x.lock`, kernel))).code).toBe('ELOCKED');
  await held.release();
  // The owner record went into the one file.
  expect(JSON.parse(await readFile(p, 'utf8'))).toMatchObject({ pid: process.pid });
  // Every spelling gives the handle the normalized absolute path.
  await mkdir(join(d.path, 'sub'));
  for (const spelling of [`${d.path}/sub/../x.lock`, `${d.path}//x.lock`, `${d.path}/./x.lock`, `${d.path}/sub/.././x.lock`]) {
    const h = await tryLock(spelling, kernel);
    expect(h.path, spelling).toBe(p);
    await h.release();
  }
});
