/**
 * A kernel wait checks the granted lock on its pooled thread before lock()
 * resolves (docs/waiting.md): the inode check of docs/contract.md 3.3 item 2 and the
 * owner record, stamped with the time of the grant. And a pool thread whose
 * timer was left armed for a far deadline is re-armed for the next wait.
 */
import { fstatSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { lock, readOwner, tryLock } from '@x/core';
import { trimWaitThreads } from '@x/core/testing';
import { pyLockf, reapAll } from './helpers/child.js';
import { blockedWaiter } from './helpers/proclocks.js';
import { tempDir } from './helpers/tmp.js';
import { lockErrorOf, within } from './helpers/core-util.js';

const kernel = { backend: 'kernel' } as const;

afterEach(async () => {
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
