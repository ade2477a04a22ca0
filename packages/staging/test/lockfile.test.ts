/**
 * Staging lock files (docs/contract.md 4.1), in one process: containers/storage
 * `staging_lockfile_test.go` parity, bad input, and the deterministic
 * interleaving of the unlinked-inode race. The multi-process tests are in
 * test/staging-lockfile*.test.ts.
 */
import { createLocked } from '@x/core';
import { hooks } from '@x/core/testing';
import { createAndLock, isLockError, LockError, tryLockPath, type StagingLockFile } from '@x/staging';
import { existsSync, lstatSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, relative } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { tempDir } from '../../../test/helpers/tmp.js';

/** Settles `promise` and returns what it rejected with (fails if it resolved). */
async function rejection(promise: Promise<unknown>): Promise<unknown> {
  return promise.then(
    (value) => {
      throw new Error(`expected a rejection, got ${String(value)}`);
    },
    (err: unknown) => err,
  );
}

async function expectLocked(path: string): Promise<LockError> {
  const err = await rejection(tryLockPath(path));
  expect(err).toBeInstanceOf(LockError);
  expect(isLockError(err, 'ELOCKED')).toBe(true);
  return err as LockError;
}

/** The directory's entries, hidden ones included. */
const entries = (dir: string): string[] => readdirSync(dir).sort();

describe('containers/storage parity', () => {
  test('createAndLock then unlockAndDelete leaves nothing in the directory', async () => {
    await using d = await tempDir();
    const l = await createAndLock(d.path, 'lock-');
    expect(entries(d.path)).toEqual([l.name]); // no hidden leftovers of the creation
    expect(lstatSync(l.path).isFile()).toBe(true);
    await l.unlockAndDelete();
    expect(entries(d.path)).toEqual([]);
  });

  test.each([
    ['lock-', 'lock-', ''],
    ['layer-*.lock', 'layer-', '.lock'],
    ['a*b*c', 'a*b', 'c'], // only the last `*` is replaced
    ['*', '', ''],
    ['', '', ''],
  ])('pattern %j: name is %j + random part + %j', async (pattern, prefix, suffix) => {
    await using d = await tempDir();
    const l = await createAndLock(d.path, pattern);
    expect(l.name.startsWith(prefix) && l.name.endsWith(suffix)).toBe(true);
    const random = l.name.slice(prefix.length, l.name.length - suffix.length);
    expect(random).toMatch(/^[^*/]+$/);
    expect(l.name).toBe(basename(l.path));
    expect(l.path).toBe(join(d.path, l.name));
    expect(existsSync(l.path)).toBe(true);
    await l.unlockAndDelete();
  });

  test('path is absolute even for a relative dir', async () => {
    await using d = await tempDir();
    const rel = relative(process.cwd(), d.path);
    expect(isAbsolute(rel)).toBe(false);
    const l = await createAndLock(rel, 'lock-');
    expect(isAbsolute(l.path)).toBe(true);
    expect(dirname(l.path)).toBe(d.path);
    expect(l.name).toBe(basename(l.path));
    await l.unlockAndDelete();
  });

  test('files are created with mode 0o600, or the given mode', async () => {
    await using d = await tempDir();
    const old = process.umask(0o022);
    try {
      const made: StagingLockFile[] = [await createAndLock(d.path, 'lock-'), await tryLockPath(join(d.path, 'fresh'))];
      for (const l of made) expect(lstatSync(l.path).mode & 0o7777).toBe(0o600);
      const custom = [
        await createAndLock(d.path, 'lock-', { mode: 0o640 }),
        await tryLockPath(join(d.path, 'c'), { mode: 0o640 }),
      ];
      for (const l of custom) expect(lstatSync(l.path).mode & 0o7777).toBe(0o640);
      for (const l of [...made, ...custom]) await l.unlockAndDelete();
    } finally {
      process.umask(old);
    }
    expect(entries(d.path)).toEqual([]);
  });

  test('tryLockPath of a missing path creates and locks it; unlockAndDelete removes it', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'lock-x');
    const l = await tryLockPath(p);
    expect(l.path).toBe(p);
    expect(l.name).toBe('lock-x');
    expect(lstatSync(p).isFile()).toBe(true);
    await expectLocked(p);
    await l.unlockAndDelete();
    expect(existsSync(p)).toBe(false);
    expect(entries(d.path)).toEqual([]);
  });

  test.each(['createAndLock', 'tryLockPath'])('same process: a path held by %s is ELOCKED until released', async (how) => {
    await using d = await tempDir();
    const l = how === 'createAndLock' ? await createAndLock(d.path, 'lock-') : await tryLockPath(join(d.path, 'lock-x'));
    const err = await expectLocked(l.path);
    expect(err.path).toBe(l.path);
    expect(err.owner?.pid).toBe(process.pid);
    await expectLocked(l.path); // a failed attempt changes nothing
    expect(existsSync(l.path)).toBe(true);
    await l.unlockAndDelete();
    const again = await tryLockPath(l.path);
    await again.unlockAndDelete();
    expect(entries(d.path)).toEqual([]);
  });

  test('a second unlockAndDelete rejects ERELEASED; await using after it does not throw', async () => {
    await using d = await tempDir();
    {
      await using l = await createAndLock(d.path, 'lock-');
      await l.unlockAndDelete();
      const err = await rejection(l.unlockAndDelete());
      expect(err).toBeInstanceOf(LockError);
      expect(isLockError(err, 'ERELEASED')).toBe(true);
      expect((err as LockError).path).toBe(l.path);
    } // disposal after the explicit delete: nothing thrown
    {
      await using _l = await tryLockPath(join(d.path, 'lock-y'));
      expect(entries(d.path)).toEqual(['lock-y']);
    } // disposal alone unlocks and deletes
    expect(entries(d.path)).toEqual([]);
  });

  test('a deleted lock file can be recreated and locked again', async () => {
    await using d = await tempDir();
    const first = await createAndLock(d.path, 'lock-');
    await first.unlockAndDelete();
    expect(existsSync(first.path)).toBe(false);
    const again = await tryLockPath(first.path);
    expect(again.path).toBe(first.path);
    expect(existsSync(first.path)).toBe(true);
    await expectLocked(first.path);
    await again.unlockAndDelete();
    const third = await tryLockPath(first.path);
    await third.unlockAndDelete();
    expect(entries(d.path)).toEqual([]);
  });

  test('10 concurrent createAndLock calls get 10 distinct held locks', async () => {
    await using d = await tempDir();
    const locks = await Promise.all(Array.from({ length: 10 }, () => createAndLock(d.path, 'lock-')));
    expect(new Set(locks.map((l) => l.path)).size).toBe(10);
    expect(entries(d.path)).toEqual(locks.map((l) => l.name).sort());
    for (const l of locks) await expectLocked(l.path);
    await Promise.all(locks.map((l) => l.unlockAndDelete()));
    expect(entries(d.path)).toEqual([]);
  });
});

describe('bad input: a TypeError or coded error, and nothing created or deleted', () => {
  /** A temp dir with one file in it, to see that nothing is created or deleted. */
  async function seeded() {
    const d = await tempDir();
    writeFileSync(join(d.path, 'keep'), 'x');
    return d;
  }

  test.each([
    ['a slash', 'lock-/x'],
    ['only a slash', '/'],
    ['a NUL', 'lock-\0'],
    ['a number', 5],
    ['undefined', undefined],
    ['an object', { toString: () => 'lock-' }],
  ])('createAndLock with a pattern holding %s: TypeError', async (_what, pattern) => {
    await using d = await seeded();
    let pending: Promise<unknown> | undefined;
    expect(() => (pending = createAndLock(d.path, pattern as string))).not.toThrow(); // rejects, never throws
    expect(await rejection(pending!)).toBeInstanceOf(TypeError);
    expect(entries(d.path)).toEqual(['keep']);
  });

  test.each([
    ['a number', 5],
    ['empty', ''],
    ['a NUL', 'a\0b'],
    ['undefined', undefined],
  ])('a dir / path that is %s: TypeError', async (_what, bad) => {
    await using d = await seeded();
    expect(await rejection(createAndLock(bad as string, 'lock-'))).toBeInstanceOf(TypeError);
    expect(await rejection(tryLockPath(bad as string))).toBeInstanceOf(TypeError);
    expect(entries(d.path)).toEqual(['keep']);
  });

  test('a missing dir: ENOENT at once, nothing created', async () => {
    await using d = await seeded();
    const missing = join(d.path, 'missing');
    for (const attempt of [createAndLock(missing, 'lock-'), tryLockPath(join(missing, 'lock-x'))]) {
      const err = (await rejection(attempt)) as NodeJS.ErrnoException;
      expect(err.code).toBe('ENOENT');
      expect(isLockError(err)).toBe(false);
      // createAndLock names the directory; tryLockPath the file.
      expect(err.path === missing || err.path?.startsWith(`${missing}/`)).toBe(true);
    }
    expect(entries(d.path)).toEqual(['keep']);
    // "At once": the building block of createAndLock asks for one name only,
    // it does not retry a non-transient error with fresh names.
    let names = 0;
    const err = await rejection(createLocked(missing, () => `lock-${++names}`));
    expect((err as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(names).toBe(1);
    expect(entries(d.path)).toEqual(['keep']);
  });

  test('a dir that is a file: ENOTDIR at once, nothing created or deleted', async () => {
    await using d = await seeded();
    const file = join(d.path, 'keep');
    for (const attempt of [createAndLock(file, 'lock-'), tryLockPath(join(file, 'lock-x'))]) {
      const err = (await rejection(attempt)) as NodeJS.ErrnoException;
      expect(err.code).toBe('ENOTDIR');
      expect(isLockError(err)).toBe(false);
    }
    let names = 0;
    const err = await rejection(createLocked(file, () => `lock-${++names}`));
    expect((err as NodeJS.ErrnoException).code).toBe('ENOTDIR');
    expect(names).toBe(1);
    expect(entries(d.path)).toEqual(['keep']);
  });

  test.each([
    ['an unknown option', { mode: 0o600, timout: 5 }],
    ['a backend option (not one of ours)', { backend: 'lease' }],
    ['a negative mode', { mode: -1 }],
    ['a fractional mode', { mode: 1.5 }],
    ['a mode past 0o7777', { mode: 0o10000 }],
    ['a string mode', { mode: '600' }],
    ['options that are a number', 5],
    ['options that are null', null],
  ])('%s: TypeError from both functions, nothing created', async (_what, options) => {
    await using d = await seeded();
    const o = options as never;
    expect(await rejection(createAndLock(d.path, 'lock-', o))).toBeInstanceOf(TypeError);
    expect(await rejection(tryLockPath(join(d.path, 'lock-x'), o))).toBeInstanceOf(TypeError);
    expect(entries(d.path)).toEqual(['keep']);
  });

  test('a bad option does not touch an existing lock file', async () => {
    await using d = await seeded();
    const held = await tryLockPath(join(d.path, 'lock-x'));
    expect(await rejection(tryLockPath(held.path, { mode: -1 }))).toBeInstanceOf(TypeError);
    expect(entries(d.path)).toEqual(['keep', 'lock-x']);
    await expectLocked(held.path); // still ours
    await held.unlockAndDelete();
    expect(entries(d.path)).toEqual(['keep']);
  });

  test('a directory at the path: an OS error, the directory is left alone', async () => {
    await using d = await seeded();
    mkdirSync(join(d.path, 'sub'));
    const err = (await rejection(tryLockPath(join(d.path, 'sub')))) as NodeJS.ErrnoException;
    expect(err.code).toBe('EISDIR');
    expect(entries(d.path)).toEqual(['keep', 'sub']);
  });
});

describe('the unlinked-inode race, forced with a hook', () => {
  afterEach(() => {
    hooks.afterOpen = undefined;
  });

  /**
   * Pauses the first tryLockPath of `path` that reaches the hook between its
   * open() and its lock; later acquisitions pass through.
   */
  function pauseFirstOpen(path: string) {
    let opened!: () => void;
    let resume!: () => void;
    const isOpen = new Promise<void>((r) => (opened = r));
    const gate = new Promise<void>((r) => (resume = r));
    let paused = false;
    hooks.afterOpen = async (p) => {
      if (p !== path || paused) return;
      paused = true;
      opened();
      await gate;
    };
    return { isOpen, resume };
  }

  /** Tracks whether a promise has settled, without consuming its rejection. */
  function track<T>(promise: Promise<T>) {
    const state = { settled: false };
    promise.then(
      () => (state.settled = true),
      () => (state.settled = true),
    );
    return state;
  }

  test('B opened the file before A deleted it, C locked the new file: B is ELOCKED', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'lock-x');
    const a = await tryLockPath(p);
    const inodeA = lstatSync(p).ino;
    const pause = pauseFirstOpen(p);
    const b = tryLockPath(p);
    const bState = track(b);
    await pause.isOpen; // B holds a descriptor of A's file, not locked yet
    await a.unlockAndDelete();
    expect(existsSync(p)).toBe(false);
    const c = await tryLockPath(p); // a new file at the same path
    expect(lstatSync(p).ino).not.toBe(inodeA); // A's inode is still open in B: its number is not reused
    expect(bState.settled).toBe(false);
    pause.resume();
    // B's lock on A's deleted inode succeeds, but it is not the file at `p`:
    // B must retry on the live file, which C holds.
    const err = await rejection(b);
    expect(err).toBeInstanceOf(LockError);
    expect(isLockError(err, 'ELOCKED')).toBe(true);
    await expectLocked(p);
    await c.unlockAndDelete();
    const later = await tryLockPath(p);
    expect(lstatSync(p).isFile()).toBe(true);
    await later.unlockAndDelete();
    expect(entries(d.path)).toEqual([]);
  });

  test('B opened the file before A deleted it, nobody else came: B holds a live file at the path', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'lock-x');
    const a = await tryLockPath(p);
    const pause = pauseFirstOpen(p);
    const b = tryLockPath(p);
    await pause.isOpen;
    await a.unlockAndDelete();
    pause.resume();
    const held = await b;
    // Not the dead inode: the path exists again and is locked (by B).
    expect(lstatSync(p).isFile()).toBe(true);
    await expectLocked(p);
    await held.unlockAndDelete();
    expect(entries(d.path)).toEqual([]);
  });
});
