/**
 * The kernel backend's wait machinery (docs/waiting.md): pooled native
 * threads, deadlines kept natively (no JS timer while waiting), cancels that
 * are never lost, worker threads that exit mid-wait, and threads that do not
 * outlive their use (their idle timeout on CLOCK_MONOTONIC, seen by strace).
 */
import { readdirSync } from 'node:fs';
import { stat } from 'node:fs/promises';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { lock, tryLock, type FileLock } from '@x/core';
import { setWaitTestGap, trimWaitThreads } from '@x/core/testing';
import { pyLockf, reapAll } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';
import { straceNode } from './helpers/strace.js';
import { haveTools } from './helpers/tools.js';
import { exited, holdMany, lockErrorOf, lockWorker, rejectionOf, tick, timerProbe, track, within } from './helpers/core-util.js';

const kernel = { backend: 'kernel' } as const;

afterEach(async () => {
  await reapAll();
});

const threads = (): number => readdirSync('/proc/self/task').length;

/** Polls (a bounded wait, not a timing assertion) until `ok()` holds. */
async function until(ok: () => boolean, what: string, ms = 10_000): Promise<void> {
  const end = Date.now() + ms;
  while (!ok()) {
    if (Date.now() > end) throw new Error(`${what}: still not true after ${ms} ms`);
    await tick(5);
  }
}

/** The thread count once no wait thread is left. */
async function baseline(): Promise<number> {
  await until(() => trimWaitThreads() === 0, 'wait threads to exit');
  await tick(20); // an exited thread leaves /proc/self/task just after
  return threads();
}

async function pyBusy(path: string): Promise<boolean> {
  const { child, first } = await pyLockf(path, 'try');
  await exited(child.proc);
  return first === 'busy';
}

test('pending waits with a timeout run no JS timer; served, they leave nothing behind', async () => {
  await using d = await tempDir();
  const paths = Array.from({ length: 8 }, (_, i) => join(d.path, `w${i}.lock`));
  const { child, first } = await holdMany(paths, kernel);
  expect(first).toMatch(/^acquired /);
  const probe = timerProbe();
  try {
    const waits = paths.map((p) => lock(p, { ...kernel, timeout: 600_000 }));
    const states = waits.map(track);
    await Promise.all(Array.from({ length: 4 }, () => within(stat(d.path), 5_000, 'fs.promises.stat')));
    expect(states.some((s) => s.settled)).toBe(false);
    expect(await probe.pending()).toBe(0);
    expect(await child.finish()).toBe(0);
    const held = await within(Promise.all(waits), 10_000, 'the served waits');
    await Promise.all(held.map((h) => h.release()));
    expect(await probe.pending()).toBe(0);
  } finally {
    probe.stop();
  }
});

test('timeouts end many pending waits with ETIMEDOUT and take nothing from the holder', async () => {
  await using d = await tempDir();
  const paths = Array.from({ length: 16 }, (_, i) => join(d.path, `w${i}.lock`));
  const { child, first } = await holdMany(paths, kernel);
  expect(first).toMatch(/^acquired /);
  const errors = await within(
    Promise.all(paths.map((p, i) => lockErrorOf(lock(p, { ...kernel, timeout: 20 + 10 * i })))),
    20_000,
    'the timed-out waits',
  );
  errors.forEach((e, i) => {
    expect(e.code).toBe('ETIMEDOUT');
    expect(e.path).toBe(paths[i]);
  });
  expect(await pyBusy(paths[0]!)).toBe(true);
  expect(await child.finish()).toBe(0);
  for (const p of paths) await (await tryLock(p, kernel)).release();
});

test('a cancel that races the start of the wait is never lost', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const { child, first } = await holdMany([p], kernel);
  expect(first).toMatch(/^acquired /);
  // Abort after 0..7 turns of the event loop: before the pool thread took the
  // wait, as it enters the blocking call, and while it blocks.
  for (let i = 0; i < 160; i++) {
    const controller = new AbortController();
    const waiting = lock(p, { ...kernel, signal: controller.signal });
    for (let k = 0; k < i % 8; k++) await new Promise((r) => setImmediate(r));
    const reason = new Error(`abort ${i}`);
    controller.abort(reason);
    expect(await within(rejectionOf(waiting), 10_000, `aborted wait ${i}`)).toBe(reason);
  }
  // A cancel that lands just before the blocking call is lost; widened to
  // 20 ms here, the abort below lands there most times: only its re-sending
  // can end those waits.
  setWaitTestGap(20_000_000);
  try {
    for (let i = 0; i < 10; i++) {
      const controller = new AbortController();
      const waiting = lock(p, { ...kernel, signal: controller.signal });
      await tick(5);
      controller.abort(new Error(`abort ${i}`));
      expect(String(await within(rejectionOf(waiting), 10_000, `aborted wait ${i} (gap)`))).toBe(`Error: abort ${i}`);
    }
    const timedOut = await within(lockErrorOf(lock(p, { ...kernel, timeout: 5 })), 10_000, 'timed-out wait (gap)');
    expect(timedOut.code).toBe('ETIMEDOUT');
  } finally {
    setWaitTestGap(0);
  }
  expect(await child.finish()).toBe(0);
});

test('wait threads are reused, and none is left once idle (nor after waits from exited workers)', async () => {
  await using d = await tempDir();
  const paths = Array.from({ length: 6 }, (_, i) => join(d.path, `w${i}.lock`));
  const base = await baseline();
  for (let round = 0; round < 2; round++) {
    const { child } = await holdMany(paths, kernel);
    const waits = paths.map((p) => lock(p, kernel));
    // One thread per pending wait, the second round reusing the first's.
    await until(() => threads() === base + paths.length, `round ${round}: ${paths.length} wait threads`);
    expect(await child.finish()).toBe(0);
    const held: FileLock[] = await within(Promise.all(waits), 10_000, 'the served waits');
    await Promise.all(held.map((h) => h.release()));
    expect(threads()).toBe(base + paths.length);
  }
  // Idle threads leave by themselves (after a couple of seconds)...
  await until(() => threads() === base, 'idle wait threads to exit by themselves');
  // ...and waits of worker threads that exit mid-wait stop and leave nothing.
  const held = await tryLock(paths[0]!, kernel);
  const workers = Array.from({ length: 4 }, () => lockWorker('wait', paths[0]!, { ...kernel, timeout: 600_000 }));
  for (const w of workers) expect(await within(w.next(), 10_000, 'worker lock()')).toBe('waiting');
  await until(() => trimWaitThreads() >= 4, 'the workers\u2019 waits to start');
  await within(Promise.all(workers.map((w) => w.worker.terminate())), 10_000, 'worker.terminate()');
  expect(await pyBusy(paths[0]!)).toBe(true);
  await held.release();
  expect(await baseline()).toBe(base);
});

/**
 * One wait on a pool thread, then that thread left idle until it exits (the
 * process's thread count back to where it was): the idle timeout's wait is
 * what strace records.
 */
const waitThenIdle = `
import { readdirSync, readFileSync, statSync } from 'node:fs';
import { lock, tryLock } from '@x/core';
const tick = () => new Promise((r) => setTimeout(r, 5));
const threads = () => readdirSync('/proc/self/task').length;
const p = process.argv[1];
const base = threads();
const held = await tryLock(p, { backend: 'kernel' });
const waiting = lock(p, { backend: 'kernel' });
const ino = statSync(p).ino;
while (!readFileSync('/proc/locks', 'utf8').split('\\n').some((l) => l.includes('->') && l.includes(':' + ino + ' '))) await tick();
await held.release();
await (await waiting).release();
while (threads() > base) await tick();
`;

test.runIf(haveTools('strace'))('an idle wait thread times out on CLOCK_MONOTONIC, not the wall clock', async () => {
  await using d = await tempDir();
  const { lines } = straceNode('fcntl,futex', waitThenIdle, [join(d.path, 'x.lock')]);
  // The pool thread: the one that blocked in F_OFD_SETLKW.
  const tid = lines.find((l) => l.includes('F_OFD_SETLKW'))?.split(/\s+/)[0];
  expect(tid).toBeDefined();
  const timed = lines.filter(
    (l) => l.startsWith(`${tid} `) && /^\d+\s+futex\(/.test(l) && l.includes('FUTEX_WAIT_BITSET') && l.includes('tv_sec'),
  );
  expect(timed.length).toBeGreaterThan(0);
  expect(timed.filter((l) => l.includes('FUTEX_CLOCK_REALTIME'))).toEqual([]);
});
