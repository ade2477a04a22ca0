/**
 * @x/core kernel backend options and file handling: removeOnRelease, the
 * owner record, shared locks, `pid`, `parents`, symlinks at the lock path
 * and `mode` (docs/contract.md 3.2 options, 3.3 item 5).
 */
import { chmod, lstat, mkdir, readdir, readFile, readlink, rename, stat, symlink, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test, vi } from 'vitest';
import { isLockError, lock, readOwner, tryLock, withLock } from '@x/core';
import { holder, pyLockf, reapAll, start } from './helpers/child.js';
import { blockedWaiter } from './helpers/proclocks.js';
import { tempDir } from './helpers/tmp.js';
import { aborted, exited, idleChild, lockErrorOf, osErrorOf, within } from './helpers/core-util.js';

const kernel = { backend: 'kernel' } as const;

afterEach(reapAll);

async function pyTry(path: string): Promise<string> {
  const { child, first } = await pyLockf(path, 'try');
  await exited(child.proc);
  return first;
}

async function exists(path: string): Promise<boolean> {
  return lstat(path).then(
    () => true,
    () => false,
  );
}

describe('removeOnRelease', () => {
  test('true deletes the file on release; the default keeps it', async () => {
    await using d = await tempDir();
    const kept = join(d.path, 'kept.lock');
    const removed = join(d.path, 'removed.lock');
    await (await tryLock(kept, kernel)).release();
    expect(await exists(kept)).toBe(true);
    const held = await tryLock(removed, { ...kernel, removeOnRelease: true });
    expect(await exists(removed)).toBe(true);
    await held.release();
    expect(await exists(removed)).toBe(false);
    await (await tryLock(kept, { ...kernel, removeOnRelease: false })).release();
    expect(await exists(kept)).toBe(true);
  });

  // That the delete happens before the unlock is caught by the stress test in
  // core-kernel.test.ts (an unlock-then-delete release gives double holders
  // there); this one checks the hand-over to a waiting process.
  test('a process waiting on a removeOnRelease holder ends up holding the file at the path', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const held = await tryLock(p, { ...kernel, removeOnRelease: true });
    const waiter = holder('lock', p, kernel);
    // The child is blocked on the old file, which the release deletes: it
    // must end up holding what is at the path.
    await blockedWaiter(p);
    await held.release();
    const { child, first } = await within(waiter, 15_000, 'the waiting child');
    expect(first).toMatch(/^acquired /);
    expect(await pyTry(p)).toBe('busy');
    expect((await readOwner(p))?.pid).toBe(child.proc.pid);
    expect(await child.finish()).toBe(0);
  });

  test('never deletes a file it does not hold (the path was replaced under us)', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const held = await tryLock(p, { ...kernel, removeOnRelease: true });
    await rename(p, `${p}.old`);
    await writeFile(p, 'someone else');
    await held.release();
    expect(await readFile(p, 'utf8')).toBe('someone else');
    expect(await exists(`${p}.old`)).toBe(true);
  });
});

describe('owner record', () => {
  test('names our pid, hostname and backend, and replaces an older, longer record', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    // A record of ours (another holder's) with a long tail; another program's bytes would be kept.
    await writeFile(p, `{"v":1,"backend":"kernel","pid":1}\n${'garbage '.repeat(1000)}\n`);
    const t0 = Date.now();
    const held = await tryLock(p, kernel);
    const owner = await readOwner(p);
    expect(owner).toMatchObject({ pid: process.pid, hostname: hostname(), backend: 'kernel' });
    expect(owner?.startedAt).toBeGreaterThanOrEqual(t0);
    expect(owner?.startedAt).toBeLessThanOrEqual(Date.now());
    expect(owner?.age).toBeGreaterThanOrEqual(0);
    // The old content is gone, not left as a tail.
    expect((await readFile(p, 'utf8')).includes('garbage')).toBe(false);
    await held.release();
  });

  test('after a wait, the record names us as soon as lock() resolves, before any other turn', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const { child } = await holder('tryLock', p, kernel);
    const waiting = lock(p, { ...kernel, timeout: 20_000 });
    child.proc.stdin!.end(); // the holder releases and exits
    const held = await waiting;
    expect(readFileSync(p, 'utf8')).toContain(`"pid":${process.pid},`); // synchronously, no turn in between
    expect(await readOwner(p)).toMatchObject({ pid: process.pid, backend: 'kernel', held: true });
    await held.release();
    expect(await child.finish()).toBe(0);
  });

  test("an ELOCKED error from another process's holder names it", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const { child } = await holder('tryLock', p, kernel);
    const err = await lockErrorOf(tryLock(p, kernel));
    expect(err.owner).toMatchObject({ pid: child.proc.pid, hostname: hostname(), backend: 'kernel' });
    expect(await child.finish()).toBe(0);
  });
});

describe('shared locks', () => {
  test('shared holders coexist; exclusive ones are refused while a shared one is held', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const shared = { ...kernel, shared: true };
    const s1 = await tryLock(p, shared);
    const s2 = await tryLock(p, shared);
    const { child, first } = await holder('tryLock', p, shared);
    expect(first).toMatch(/^acquired /);
    expect((await lockErrorOf(tryLock(p, kernel))).code).toBe('ELOCKED');
    expect((await lockErrorOf(lock(p, { ...kernel, timeout: 50 }))).code).toBe('ETIMEDOUT');
    expect((await holder('tryLock', p, kernel)).first).toBe('error ELOCKED');
    expect(await pyTry(p)).toBe('busy');
    await s1.release();
    expect((await lockErrorOf(tryLock(p, kernel))).code).toBe('ELOCKED');
    await s2.release();
    expect((await lockErrorOf(tryLock(p, kernel))).code).toBe('ELOCKED');
    expect(await child.finish()).toBe(0);
    await (await tryLock(p, kernel)).release();
  });

  test('readOwner lists every shared holder: two processes print identical /proc/locks lines, both count', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const shared = { ...kernel, shared: true };
    const a = await holder('tryLock', p, shared);
    const b = await holder('tryLock', p, shared);
    expect([a.first, b.first]).toEqual([expect.stringMatching(/^acquired/), expect.stringMatching(/^acquired/)]);
    const owner = await readOwner(p);
    expect(owner).toMatchObject({ held: true, shared: true });
    expect(owner?.holders).toEqual([
      { kind: 'ofd', shared: true, pid: undefined },
      { kind: 'ofd', shared: true, pid: undefined },
    ]);
    expect(await a.child.finish()).toBe(0);
    expect(await b.child.finish()).toBe(0);
  });

  test('a shared lock is refused while an exclusive one is held, and waits for it', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const shared = { ...kernel, shared: true };
    const { child } = await holder('tryLock', p, kernel);
    expect((await lockErrorOf(tryLock(p, shared))).code).toBe('ELOCKED');
    const waiting = lock(p, { ...shared, timeout: 30_000 });
    await blockedWaiter(p);
    expect(await child.finish()).toBe(0);
    const held = await within(waiting, 15_000, 'shared lock() after the exclusive holder');
    expect(await pyTry(p)).toBe('busy');
    await held.release();
  });
});

describe('pid option', () => {
  test('a number is recorded as the owner', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const other = idleChild();
    const held = await tryLock(p, { ...kernel, pid: other.proc.pid! });
    expect((await readOwner(p))?.pid).toBe(other.proc.pid);
    expect((await lockErrorOf(tryLock(p, kernel))).owner?.pid).toBe(other.proc.pid);
    await held.release();
    expect(await other.finish()).toBe(0);
  });

  test('a process that is not running rejects ESRCH and creates nothing', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const gone = start(process.execPath, ['-e', '']);
    await exited(gone.proc);
    const pid = gone.proc.pid!;
    for (const attempt of [
      () => tryLock(p, { ...kernel, pid }),
      () => lock(p, { ...kernel, pid, timeout: 1_000 }),
      () => tryLock(p, { ...kernel, pid: gone.proc }),
    ]) {
      const err = await lockErrorOf(attempt());
      expect(err.code).toBe('ESRCH');
      expect(err.path).toBe(p);
    }
    expect(await readdir(d.path)).toEqual([]);
  });

  test('with a ChildProcess, the lock is released when the child exits', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const child = idleChild();
    const held = await tryLock(p, { ...kernel, pid: child.proc });
    expect((await readOwner(p))?.pid).toBe(child.proc.pid);
    expect((await lockErrorOf(tryLock(p, kernel))).code).toBe('ELOCKED');
    expect(held.signal.aborted).toBe(false);
    expect(await child.finish()).toBe(0);
    await within(aborted(held.signal), 5_000, 'the release on child exit');
    expect(isLockError(held.signal.reason, 'ERELEASED')).toBe(true);
    await (await tryLock(p, kernel)).release();
  });
});

describe('parents option', () => {
  test('true creates missing directories; without it ENOENT with code and path, nothing created', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a', 'b', 'x.lock');
    for (const attempt of [() => tryLock(p, kernel), () => lock(p, { ...kernel, timeout: 1_000 })]) {
      const err = await osErrorOf(attempt());
      expect(err.code).toBe('ENOENT');
      expect(err.path).toBe(p);
    }
    const fn = vi.fn();
    expect((await osErrorOf(withLock(p, fn, kernel))).code).toBe('ENOENT');
    expect(fn).not.toHaveBeenCalled();
    expect(await readdir(d.path)).toEqual([]);

    const held = await tryLock(p, { ...kernel, parents: true });
    expect((await stat(p)).isFile()).toBe(true);
    await held.release();
    const deeper = join(d.path, 'c', 'd', 'e', 'y.lock');
    await (await lock(deeper, { ...kernel, parents: true })).release();
    expect((await stat(deeper)).isFile()).toBe(true);
  });
});

describe('create option', () => {
  test('false takes an existing file, and rejects ENOENT for a missing one without creating it', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    expect(await osErrorOf(tryLock(p, { ...kernel, create: false }))).toMatchObject({ code: 'ENOENT', path: p });
    expect(await readdir(d.path)).toEqual([]);
    await writeFile(p, '');
    const held = await tryLock(p, { ...kernel, create: false });
    expect(await pyTry(p)).toBe('busy');
    await held.release();
    expect(await exists(p)).toBe(true);
  });

  test('an option that is a getter, inherited or not enumerable counts like any other', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    class Options {
      backend = 'kernel' as const;
      get create() {
        return false;
      }
    }
    const hidden = Object.defineProperty({ backend: 'kernel' as const }, 'create', { value: false, enumerable: false });
    for (const options of [new Options(), hidden]) {
      expect(await osErrorOf(tryLock(p, options))).toMatchObject({ code: 'ENOENT', path: p });
      expect(await readdir(d.path)).toEqual([]);
    }
  });

  test('false with a file deleted while we wait rejects ENOENT instead of creating it again', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const first = await tryLock(p, { ...kernel, removeOnRelease: true });
    const waiting = osErrorOf(lock(p, { ...kernel, create: false, timeout: 10_000 }));
    await first.release(); // deletes the file while the waiter holds a descriptor of it
    expect(await waiting).toMatchObject({ code: 'ENOENT', path: p });
    expect(await readdir(d.path)).toEqual([]);
  });

  test('false is refused by the lease backend (ENOTSUP); a non-boolean is a TypeError', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    expect((await lockErrorOf(tryLock(p, { backend: 'lease', create: false }))).code).toBe('ENOTSUP');
    await expect(tryLock(p, { create: 'no' as never })).rejects.toThrow(/`create`/);
    expect(await readdir(d.path)).toEqual([]);
  });
});

describe('symlinks (docs/contract.md 3.3 item 5)', () => {
  test('a dangling symlink at the lock path is refused (ELOOP) and its target not created', async () => {
    await using d = await tempDir();
    const target = join(d.path, 'target');
    const p = join(d.path, 'x.lock');
    await symlink(target, p);
    for (const attempt of [
      () => tryLock(p, kernel),
      () => lock(p, { ...kernel, timeout: 1_000 }),
      () => tryLock(p, { ...kernel, parents: true, removeOnRelease: true }),
      () => tryLock(p, { ...kernel, shared: true }),
      () => withLock(p, () => undefined, kernel),
    ]) {
      const err = await osErrorOf(attempt());
      expect(err.code).toBe('ELOOP');
      expect(err.path).toBe(p);
    }
    expect(await exists(target)).toBe(false);
    expect(await readlink(p)).toBe(target);
  });

  test('a symlink to an existing file is refused and the file is neither written nor locked', async () => {
    await using d = await tempDir();
    const target = join(d.path, 'precious');
    const p = join(d.path, 'x.lock');
    await writeFile(target, 'precious data');
    await chmod(target, 0o600);
    const before = await stat(target);
    await symlink(target, p);
    expect((await osErrorOf(tryLock(p, kernel))).code).toBe('ELOOP');
    expect((await osErrorOf(lock(p, { ...kernel, timeout: 1_000 }))).code).toBe('ELOOP');
    expect((await osErrorOf(tryLock(p, { ...kernel, removeOnRelease: true }))).code).toBe('ELOOP');
    const after = await stat(target);
    expect(await readFile(target, 'utf8')).toBe('precious data');
    expect(after.mtimeMs).toBe(before.mtimeMs);
    expect(after.mode).toBe(before.mode);
    expect(await pyTry(target)).toBe('acquired');
    expect(await readlink(p)).toBe(target);
  });
});

describe('mode (docs/contract.md 3.3 item 5)', () => {
  test('a created lock file is 0o644 by default (umask 022), the given mode otherwise; existing files keep theirs', async () => {
    await using d = await tempDir();
    const old = process.umask(0o022);
    try {
      const bits = async (path: string) => (await stat(path)).mode & 0o7777;
      const cases: [string, number | undefined, number][] = [
        ['default.lock', undefined, 0o644],
        ['600.lock', 0o600, 0o600],
        ['640.lock', 0o640, 0o640],
        ['666.lock', 0o666, 0o644], // the umask applies
      ];
      for (const [name, mode, want] of cases) {
        const p = join(d.path, name);
        const held = await tryLock(p, mode === undefined ? kernel : { ...kernel, mode });
        expect(await bits(p)).toBe(want);
        await held.release();
      }
      // No options object at all.
      const bare = join(d.path, 'bare.lock');
      await (await tryLock(bare)).release();
      expect(await bits(bare)).toBe(0o644);
      await (await lock(join(d.path, 'bare2.lock'))).release();
      expect(await bits(join(d.path, 'bare2.lock'))).toBe(0o644);
      const existing = join(d.path, 'existing.lock');
      await writeFile(existing, '');
      await chmod(existing, 0o600);
      await (await tryLock(existing, kernel)).release();
      expect(await bits(existing)).toBe(0o600);
      // parents: the directories are created, the file gets the default mode.
      await mkdir(join(d.path, 'sub'));
      const nested = join(d.path, 'sub', 'deeper', 'x.lock');
      await (await tryLock(nested, { ...kernel, parents: true })).release();
      expect(await bits(nested)).toBe(0o644);
    } finally {
      process.umask(old);
    }
  });
});
