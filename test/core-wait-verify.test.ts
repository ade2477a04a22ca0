/**
 * A kernel wait checks the granted lock on its pooled thread before lock()
 * resolves (docs/waiting.md): the inode check of docs/contract.md 3.3 item 2 and the
 * owner record, stamped with the time of the grant. And a pool thread whose
 * timer was left armed for a far deadline is re-armed for the next wait.
 * No cancel signal reaches that check: a deadline passing during it leaves
 * the lock granted, and a cancel during it still wins.
 */
import { closeSync, fstatSync, openSync, readFileSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { kernelLocks, lock, readOwner, tryLock } from '@x/core';
import { setWaitTestGap, trimWaitThreads } from '@x/core/testing';
import { exited, tick } from './helpers/core-util.js';
import { pyLockf, reapAll } from './helpers/child.js';
import { blockedWaiter } from './helpers/proclocks.js';
import { tempDir } from './helpers/tmp.js';
import { lockErrorOf, within } from './helpers/core-util.js';

const kernel = { backend: 'kernel' } as const;
const ECANCELED = 125; // Linux

afterEach(async () => {
  setWaitTestGap(0, 'check');
  await reapAll();
});

test('a waiter whose holder deletes the file on release ends up holding the file now at the path', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const held = await tryLock(p, { ...kernel, removeOnRelease: true });
  const waiting = lock(p, { ...kernel, timeout: 60_000 });
  await blockedWaiter(p); // blocked on the inode the holder is about to delete
  await held.release();
  const next = await within(waiting, 10_000, 'the waiter');
  try {
    // It woke up holding the deleted inode, found out, and took the new file.
    expect(fstatSync(next.fd!).ino).toBe(statSync(p).ino);
    expect(fstatSync(next.fd!).nlink).toBe(1);
    expect((await readOwner(p))?.pid).toBe(process.pid);
  } finally {
    await next.release();
  }
});

test('the record is written before a waited lock() resolves, stamped with the time of the grant', async () => {
  await using d = await tempDir();
  // Our own record is rendered once, at our first lock: before python takes the other file.
  await (await tryLock(join(d.path, 'first.lock'), kernel)).release();
  const p = join(d.path, 'x.lock');
  const { child, first } = await pyLockf(p); // creates the file empty
  expect(first).toBe('acquired');
  const waiting = lock(p, { ...kernel, timeout: 60_000 });
  await blockedWaiter(p);
  const released = Date.now();
  child.proc.stdin?.end(); // python unlocks
  const held = await within(waiting, 10_000, 'the waiter');
  try {
    const owner = await readOwner(p);
    expect(owner?.pid).toBe(process.pid);
    expect(owner?.startedAt).toBeGreaterThanOrEqual(released);
  } finally {
    await held.release();
  }
});

test('a pool thread that served a wait with a far deadline times out the next, shorter one', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  // One pool thread serves both waits: the first leaves its timer armed for
  // 10 minutes from now, the second must re-arm it for 50 ms.
  expect(await within(waitForTrim(), 10_000, 'idle wait threads to exit')).toBe(0);
  const held = await tryLock(p, { ...kernel, removeOnRelease: false });
  const waiting = lock(p, { ...kernel, timeout: 600_000 });
  await blockedWaiter(p);
  await held.release();
  const second = await within(waiting, 10_000, 'the first waiter');
  const error = await within(lockErrorOf(lock(p, { ...kernel, timeout: 50 })), 10_000, 'the timed-out wait');
  expect(error.code).toBe('ETIMEDOUT');
  await second.release();
});

async function waitForTrim(): Promise<number> {
  for (;;) {
    const n = trimWaitThreads();
    if (n === 0) return n;
    await new Promise((resolve) => setTimeout(resolve, 5));
  }
}

/** Resolves once /proc/locks shows a granted (not blocked) lock on `path`'s inode: with its holder gone, ours. */
async function granted(path: string): Promise<void> {
  const ino = statSync(path).ino;
  for (let i = 0; i < 4000; i++) {
    const lines = readFileSync('/proc/locks', 'utf8').split('\n');
    if (lines.some((l) => !l.includes('->') && l.split(/\s+/).some((f) => f.endsWith(`:${ino}`)))) return;
    await tick(5);
  }
  throw new Error(`no lock was granted on ${path}`);
}

async function pyBusy(path: string): Promise<boolean> {
  const { child, first } = await pyLockf(path, 'try');
  await exited(child.proc);
  return first === 'busy';
}

test('a deadline that passes during the check after the grant does not interrupt it: the lock is held', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const { child, first } = await pyLockf(p);
  expect(first).toBe('acquired');
  // The check (fstat, lstat, pread, pwrite...) lasts 3 s here; a signal that
  // cuts it short fails it with EINTR, as on FUSE. The deadline falls inside.
  setWaitTestGap(3_000_000_000, 'check');
  const waiting = lock(p, { ...kernel, timeout: 2_000 });
  await blockedWaiter(p);
  child.proc.stdin?.end(); // python unlocks: the grant comes well before the deadline
  const held = await within(waiting, 10_000, 'the waiter');
  try {
    expect((await readOwner(p))?.pid).toBe(process.pid);
    expect(await pyBusy(p)).toBe(true);
  } finally {
    await held.release();
  }
});

test('a cancel that comes during the check after the grant wins: the wait reports it, the lock is released', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'x.lock');
  const { child, first } = await pyLockf(p);
  expect(first).toBe('acquired');
  // The addon itself (the one @x/core loaded): lock() would release a lock
  // that came with its abort anyway; the wait must not report it held.
  const addon = createRequire(import.meta.url)(kernelLocks.file!) as {
    wait(fd: number, type: number, timeoutMs: number, path: string): Promise<number>;
    cancel(fd: number): void;
  };
  const fd = openSync(p, 'r+');
  try {
    setWaitTestGap(1_000_000_000, 'check');
    const waiting = addon.wait(fd, 2, -1, p);
    await blockedWaiter(p);
    child.proc.stdin?.end();
    await exited(child.proc);
    await granted(p); // granted to us, and checking
    addon.cancel(fd);
    expect(await within(waiting, 10_000, 'the wait')).toBe(-ECANCELED);
    expect(await pyBusy(p)).toBe(false);
  } finally {
    closeSync(fd);
  }
});
