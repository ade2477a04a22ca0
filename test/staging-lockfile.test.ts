/**
 * Staging lock files across processes (docs/contract.md 4.1): containers/storage's
 * `TestTryLockPathMultiProcess`, and interop with classic POSIX `fcntl` locks
 * (Python's `fcntl.lockf`, as podman/buildah take them).
 */
import { createAndLock, isLockError, LockError, tryLockPath, type StagingLockFile } from '@x/staging';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, expect, test } from 'vitest';
import { holder, pyLockf, reapAll } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

async function take(how: 'createAndLock' | 'tryLockPath', dir: string): Promise<StagingLockFile> {
  return how === 'createAndLock' ? createAndLock(dir, 'lock-') : tryLockPath(join(dir, 'lock-x'));
}

test.each(['createAndLock', 'tryLockPath'] as const)(
  'three child processes fail to tryLockPath a path held by our %s; one succeeds after release',
  async (how) => {
    await using d = await tempDir();
    const held = await take(how, d.path);
    const tries = await Promise.all([1, 2, 3].map(() => holder('tryLockPath', held.path)));
    for (const { child, first } of tries) {
      expect(first).toBe('error ELOCKED');
      expect(await child.finish()).toBe(3);
    }
    expect(readdirSync(d.path)).toEqual([held.name]); // the failed attempts left the file alone
    await held.unlockAndDelete();
    expect(existsSync(held.path)).toBe(false);

    const { child, first } = await holder('tryLockPath', held.path);
    expect(first).toMatch(/^acquired /);
    const details = JSON.parse(first.slice('acquired '.length)) as { pid: number; path: string; name: string };
    expect(details).toEqual({ pid: child.proc.pid, path: held.path, name: held.name });
    // Now the child holds it, and we are the ones excluded.
    const err = await tryLockPath(held.path).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(LockError);
    expect(isLockError(err, 'ELOCKED')).toBe(true);
    expect((err as LockError).owner?.pid).toBe(child.proc.pid);
    expect(await child.finish()).toBe(0);
    expect(readdirSync(d.path)).toEqual([]); // the child's unlockAndDelete removed it
  },
);

test('a staging lock file held by a child createAndLock is ELOCKED for us, and free once it exits', async () => {
  await using d = await tempDir();
  const { child, first } = await holder('createAndLock', d.path, { pattern: 'lock-*.tmp' });
  expect(first).toMatch(/^acquired /);
  const { path, name } = JSON.parse(first.slice('acquired '.length)) as { path: string; name: string };
  expect(name).toMatch(/^lock-.+\.tmp$/);
  expect(readdirSync(d.path)).toEqual([name]);
  const err = await tryLockPath(path).catch((e: unknown) => e);
  expect(isLockError(err, 'ELOCKED')).toBe(true);
  expect((err as LockError).owner?.pid).toBe(child.proc.pid);
  expect(await child.finish()).toBe(0);
  expect(readdirSync(d.path)).toEqual([]);
});

test('a staging lock file held by python fcntl.lockf is ELOCKED, owner.pid = python', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'lock-py');
  const { child, first } = await pyLockf(p);
  expect(first).toBe('acquired');
  const err = await tryLockPath(p).catch((e: unknown) => e);
  expect(err).toBeInstanceOf(LockError);
  expect(isLockError(err, 'ELOCKED')).toBe(true);
  expect((err as LockError).owner?.pid).toBe(child.proc.pid);
  expect(existsSync(p)).toBe(true); // not deleted by the failed attempt
  child.proc.stdin!.end();
  expect(await child.line()).toBe('released');
  expect(await child.finish()).toBe(0);
  const l = await tryLockPath(p);
  await l.unlockAndDelete();
  expect(readdirSync(d.path)).toEqual([]);
});

test.each(['createAndLock', 'tryLockPath'] as const)(
  "a staging lock file held by our %s makes python's non-blocking lockf fail",
  async (how) => {
    await using d = await tempDir();
    const held = await take(how, d.path);
    const busy = await pyLockf(held.path, 'try');
    expect(busy.first).toBe('busy');
    expect(await busy.child.finish()).toBe(0);
    await held.unlockAndDelete();
    // Released and deleted: python creates the file afresh and gets it.
    const free = await pyLockf(held.path, 'try');
    expect(free.first).toBe('acquired');
    expect(await free.child.finish()).toBe(0);
  },
);
