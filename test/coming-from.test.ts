/**
 * The examples of docs/coming-from.md, one `describe` per library. The code
 * after each `// docs/coming-from.md, <name>` marker (up to the next `test(`)
 * is the page's code block, verbatim minus this indentation; the page names
 * the test that runs it, and test/coming-from-docs.test.ts fails when the two
 * drift apart. The tests around an example check what the page claims,
 * including the limitations it admits.
 */
import { spawn, spawnSync } from 'node:child_process';
import { once } from 'node:events';
import { existsSync, readFileSync } from 'node:fs';
import { mkdir, readdir, readFile, rename, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { afterEach, describe, expect, test } from 'vitest';
import { FileLock, isLockError, isProcessAlive, lock, LockError, readOwner, tryLock, withLock } from '@x/core';
import { createAndLock, tryLockPath } from '@x/staging';
import { holder, pyLockf, reapAll, start, type Child } from './helpers/child.js';
import { lockErrorOf, within } from './helpers/core-util.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

/** A pid that is provably dead on this host: a child we ran and reaped. */
function deadPid(): number {
  return spawnSync(process.execPath, ['-e', '0']).pid!;
}

/** The JSON after `acquired ` on a holder.mjs first line. */
function details(first: string): { pid: number; path: string; name?: string } {
  expect(first).toMatch(/^acquired /);
  return JSON.parse(first.slice('acquired '.length)) as { pid: number; path: string; name?: string };
}

/** A python3 `fcntl.flock` holder (what nftban's Go installer takes); prints `acquired`, releases on stdin EOF. */
async function pyFlock(path: string): Promise<Child> {
  const code = [
    'import fcntl, os, sys',
    "f = open(sys.argv[1], 'a+')",
    'fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)',
    "f.truncate(0); f.write('%d\\n' % os.getpid()); f.flush()",
    "print('acquired', flush=True)",
    'sys.stdin.read()',
  ].join('\n');
  const child = start('python3', ['-c', code, path]);
  expect(await child.line()).toBe('acquired');
  return child;
}

// ---------------------------------------------------------------------------
describe('u-root pkg/lockfile', () => {
  // docs/coming-from.md, u-root example 1
  /** Runs `build` under the lock; when busy, reports the holder's pid instead. */
  async function buildIfFree(path: string, build: () => Promise<void>): Promise<{ built: true } | { busy: number | undefined }> {
    try {
      await using _held = await tryLock(path); // lockfile.New(path).TryLock()
      await build();
      return { built: true }; // Unlock(): at the end of the scope, even if build() throws
    } catch (err) {
      if (isLockError(err, 'ELOCKED')) return { busy: err.owner?.pid }; // lockfile.ErrBusy
      throw err;
    }
  }

  test('example 1: TryLock -> tryLock, ErrBusy -> ELOCKED with owner.pid, Unlock -> end of scope', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'bb.lock');
    const { child, first } = await holder('tryLock', p);
    const other = details(first);
    let builds = 0;
    const build = async () => void builds++;
    expect(await buildIfFree(p, build)).toEqual({ busy: other.pid });
    expect(builds).toBe(0);
    expect(await child.finish()).toBe(0);
    expect(await buildIfFree(p, build)).toEqual({ built: true });
    expect(builds).toBe(1);
    // The scope released it: free again, for us and for another process.
    expect(await buildIfFree(p, build)).toEqual({ built: true });
    const again = await holder('tryLock', p);
    details(again.first);
    expect(await again.child.finish()).toBe(0);
  });

  test('a second release is not an error (u-root: a second Unlock is ErrRogueDeletion)', async () => {
    await using d = await tempDir();
    const held = await tryLock(join(d.path, 'a.lock'));
    await held.release();
    await held.release();
    expect(held.signal.aborted).toBe(true);
    expect(isLockError(held.signal.reason, 'ERELEASED')).toBe(true);
  });

  test('the same process is not re-entrant (u-root: same pid = already ours)', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    await using _held = await tryLock(p);
    const err = await lockErrorOf(tryLock(p));
    expect(err.code).toBe('ELOCKED');
    expect(err.owner?.pid).toBe(process.pid);
  });

  test('a leftover u-root lock (a symlink) at the path is an error, never followed', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'bb.lock');
    const target = join(d.path, 'bb.lock-123456789');
    await writeFile(target, '4242');
    await symlink(target, p);
    await expect(tryLock(p)).rejects.toMatchObject({ code: 'ELOOP' });
    await expect(tryLock(p, { backend: 'lease' })).rejects.toMatchObject({ code: 'ELOOP' });
    expect(readFileSync(target, 'utf8')).toBe('4242');
  });

  // docs/coming-from.md, u-root example 2
  /** u-root's Unlock() result, from a lease: ErrRogueDeletion when the file was deleted or replaced under us. */
  async function unlock(held: FileLock): Promise<'ok' | 'rogue-deletion'> {
    try {
      await held.release();
      return 'ok';
    } catch (err) {
      if (isLockError(err, 'ECOMPROMISED')) return 'rogue-deletion'; // lockfile.ErrRogueDeletion
      throw err;
    }
  }

  test('example 2: ErrRogueDeletion -> lease release rejects ECOMPROMISED', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'bb.lock');
    const held = await tryLock(p, { backend: 'lease', staleAfter: 5_000 });
    await rm(p); // the "evil actor" of u-root's TestLockFileRemoval
    expect(await unlock(held)).toBe('rogue-deletion');
    const again = await tryLock(p, { backend: 'lease', staleAfter: 5_000 }); // TryLock works again
    expect(await unlock(again)).toBe('ok');
    expect(existsSync(p)).toBe(false);
  });

  test('lease: the next heartbeat notices the deletion, aborts the signal and calls onCompromised', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'bb.lock');
    const reported: LockError[] = [];
    const held = await tryLock(p, { backend: 'lease', staleAfter: 2_000, heartbeat: 50, onCompromised: (e) => reported.push(e) });
    await rm(p);
    await within(once(held.signal, 'abort'), 10_000, 'lease loss');
    expect(isLockError(held.signal.reason, 'ECOMPROMISED')).toBe(true);
    expect(reported.map((e) => e.code)).toEqual(['ECOMPROMISED']);
    await expect(held.release()).rejects.toMatchObject({ code: 'ECOMPROMISED' });
  });

  test('kernel: the lock belongs to the inode; deleting the file is not noticed and lets a second holder in', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'bb.lock');
    const { child, first } = await holder('tryLock', p, { backend: 'kernel' });
    details(first);
    // Renamed: the lock went with the inode, the old name is free.
    await rename(p, `${p}.old`);
    await expect(tryLock(`${p}.old`)).rejects.toMatchObject({ code: 'ELOCKED' });
    const second = await tryLock(p);
    await second.release();
    // Deleted: nobody can reach the held inode any more, so the path is free too.
    await rm(`${p}.old`);
    const third = await tryLock(p);
    expect(third.backend).toBe('kernel');
    // The first holder was never told: its release succeeds ("released", exit 0).
    expect(await child.finish()).toBe(0);
    expect(await child.line()).toBe('released');
    await third.release();
  });
});

// ---------------------------------------------------------------------------
describe('vorma kit/lockfile PIDLock', () => {
  // docs/coming-from.md, vorma example
  class DevServerRunningError extends Error {
    constructor(
      readonly pid: number | undefined,
      options: { cause: unknown },
    ) {
      super(`another wave dev process is already running (pid ${pid ?? 'unknown'})`, options);
      this.name = 'DevServerRunningError';
    }
  }

  /** NewPIDLockWithOptions(path, opts).Acquire() */
  async function acquireDevLock(path: string, onLeaseLost: (err: LockError) => void): Promise<FileLock> {
    try {
      return await tryLock(path, {
        backend: 'lease', // an O_EXCL lease file, as PIDLock's
        parents: true, // MkdirAll(dir, DirectoryWriteMode)
        staleAfter: 3_000, // LeaseStaleThreshold
        heartbeat: 250, // LeaseHeartbeatInterval
        onCompromised: onLeaseLost, // OnLeaseLost
      });
    } catch (err) {
      if (isLockError(err, 'ELOCKED')) throw new DevServerRunningError(err.owner?.pid, { cause: err }); // HeldError
      throw err;
    }
  }

  test('example: a live lease in another process is a custom held error carrying its pid', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'app', '.wave-dev.lock');
    await mkdir(join(d.path, 'app'));
    const { child, first } = await holder('tryLock', p, { backend: 'lease', staleAfter: 3_000, heartbeat: 250 });
    const other = details(first);
    const err = await acquireDevLock(p, () => undefined).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DevServerRunningError); // errors.Is(err, HeldError)
    expect((err as DevServerRunningError).pid).toBe(other.pid);
    expect(isLockError((err as DevServerRunningError).cause, 'ELOCKED')).toBe(true);
    expect(await child.finish()).toBe(0);
    const held = await acquireDevLock(p, () => undefined);
    expect(held.backend).toBe('lease');
    expect((await readOwner(p))?.pid).toBe(process.pid);
    await held.release();
    expect(existsSync(p)).toBe(false); // the lease file is removed, as Release() does
  });

  test('parents: true creates the missing directories, like MkdirAll', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a', 'b', '.wave-dev.lock');
    const held = await acquireDevLock(p, () => undefined);
    await held.release();
    expect(existsSync(join(d.path, 'a', 'b'))).toBe(true);
  });

  test("OnLeaseLost -> onCompromised once and held.signal; Release() never removes the new owner's file", async () => {
    await using d = await tempDir();
    const p = join(d.path, '.wave-dev.lock');
    const lost: LockError[] = [];
    const held = await acquireDevLock(p, (e) => lost.push(e));
    // Someone else's lease replaces ours (a new inode at the path).
    const foreign = join(d.path, 'foreign');
    await writeFile(foreign, JSON.stringify({ v: 1, backend: 'lease', pid: 1, hostname: 'elsewhere' }) + '\n');
    await rename(foreign, p);
    await within(once(held.signal, 'abort'), 10_000, 'lease loss');
    expect(lost.map((e) => e.code)).toEqual(['ECOMPROMISED']);
    expect(held.signal.aborted).toBe(true); // PIDLock.Held() == false
    await expect(held.release()).rejects.toMatchObject({ code: 'ECOMPROMISED' }); // vorma: nil
    expect((await readOwner(p))?.hostname).toBe('elsewhere'); // left alone
    expect(lost).toHaveLength(1);
  });

  test('a lease is judged by its inode: rewriting the content in place is not a takeover', async () => {
    await using d = await tempDir();
    const p = join(d.path, '.wave-dev.lock');
    const held = await tryLock(p, { backend: 'lease', staleAfter: 3_000, heartbeat: 20 });
    await writeFile(p, JSON.stringify({ v: 1, backend: 'lease', pid: 1, hostname: 'elsewhere' }) + '\n');
    // Wait for a heartbeat after the rewrite: each one touches the file's mtime.
    const written = (await stat(p)).mtimeMs;
    while ((await stat(p)).mtimeMs === written) await sleep(5);
    expect(held.signal.aborted).toBe(false);
    await held.release();
    expect(existsSync(p)).toBe(false);
  });
});

// ---------------------------------------------------------------------------
describe("nftban's installer lock", () => {
  // docs/coming-from.md, nftban example
  class InstallerBusyError extends Error {
    constructor(
      readonly pid: number | undefined,
      readonly lockPath: string,
      options: { cause: unknown },
    ) {
      super(
        pid === undefined
          ? `another installer holds the lock at ${lockPath} (recorded pid unreadable)`
          : `another installer is running (pid ${pid}) — lock file: ${lockPath}`,
        options,
      );
      this.name = 'InstallerBusyError';
    }
  }

  /** lock.Acquire(path): non-blocking, creates the directory, records our pid. */
  async function acquireInstallerLock(path: string): Promise<FileLock> {
    try {
      return await tryLock(path, { backend: 'flock', parents: true });
    } catch (err) {
      if (isLockError(err, 'ELOCKED')) throw new InstallerBusyError(err.owner?.pid, path, { cause: err });
      throw err;
    }
  }

  test('example: a second installer gets "another installer is running (pid N)" from err.owner.pid', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'var', 'lib', 'nftban', 'state', 'installer.lock');
    await mkdir(join(d.path, 'var', 'lib', 'nftban', 'state'), { recursive: true });
    const { child, first } = await holder('tryLock', p, { backend: 'flock' });
    const other = details(first);
    const err = await acquireInstallerLock(p).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InstallerBusyError);
    expect((err as InstallerBusyError).pid).toBe(other.pid);
    expect((err as InstallerBusyError).lockPath).toBe(p);
    expect(await child.finish()).toBe(0);
    const held = await acquireInstallerLock(p);
    expect((await readOwner(p))?.pid).toBe(process.pid);
    await held.release();
    await held.release(); // idempotent, like Release()
    expect(existsSync(p)).toBe(true); // the file is kept
    expect((await readOwner(p))?.pid).toBe(process.pid); // with the last holder's pid, for post-mortems
  });

  test('the same process cannot take it twice; the error names our own pid', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'installer.lock');
    await using _held = await acquireInstallerLock(p);
    const err = await acquireInstallerLock(p).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InstallerBusyError);
    expect((err as InstallerBusyError).pid).toBe(process.pid);
  });

  test('creates missing parent directories', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'state', 'nested', 'installer.lock');
    await using _held = await acquireInstallerLock(p);
    expect(existsSync(p)).toBe(true);
  });

  test('a SIGKILLed installer frees the lock at once; its stale pid is simply replaced', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'installer.lock');
    const { child, first } = await holder('tryLock', p, { backend: 'flock' });
    const other = details(first);
    expect((await readOwner(p))?.pid).toBe(other.pid);
    child.proc.kill('SIGKILL');
    await child.reap();
    expect((await readOwner(p))?.pid).toBe(other.pid); // the dead installer's pid is still there
    await using _held = await acquireInstallerLock(p);
    expect((await readOwner(p))?.pid).toBe(process.pid);
  });

  test('an empty file left behind is taken and gets our record', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'installer.lock');
    await writeFile(p, '');
    await using _held = await acquireInstallerLock(p);
    expect((await readOwner(p))?.pid).toBe(process.pid);
  });

  test.each(['99999\n', '  \n', 'not-a-pid', '-1', '0'])(
    'a file left with %j by the Go installer is taken and kept as it is; the kernel names us',
    async (content) => {
      await using d = await tempDir();
      const p = join(d.path, 'installer.lock');
      await writeFile(p, content);
      await using _held = await acquireInstallerLock(p);
      expect(await readFile(p, 'utf8')).toBe(content); // another program's file: never rewritten
      expect((await readOwner(p))?.pid).toBe(process.pid); // flock holders' pids come from /proc/locks
    },
  );

  test("a holder whose record is unreadable is still named: the kernel gives a flock holder's pid", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'installer.lock');
    await using held = await acquireInstallerLock(p);
    await writeFile(p, ''); // nftban's test truncates the holder's file
    const err = await acquireInstallerLock(p).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InstallerBusyError);
    expect((err as InstallerBusyError).pid).toBe(process.pid); // from /proc/locks
    expect(held.signal.aborted).toBe(false);
  });

  test('a flock(2) holder (the Go installer) excludes us, named by its pid, and we exclude it', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'installer.lock');
    const goInstaller = await pyFlock(p);
    const err = await acquireInstallerLock(p).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(InstallerBusyError);
    expect((err as InstallerBusyError).pid).toBe(goInstaller.proc.pid);
    await goInstaller.finish();
    await using _held = await acquireInstallerLock(p);
    const second = start('python3', [
      '-c',
      'import fcntl,sys\nf=open(sys.argv[1],"a+")\ntry:\n  fcntl.flock(f, fcntl.LOCK_EX|fcntl.LOCK_NB); print("acquired")\nexcept OSError: print("busy")',
      p,
    ]);
    expect(await second.line()).toBe('busy');
    await second.finish();
  });
});

// ---------------------------------------------------------------------------
describe('containers/storage staging_lockfile', () => {
  // docs/coming-from.md, containers/storage example
  /** tempdir.NewTempDir: lock-<id> is locked before temp-dir-<id> exists. */
  async function newTempDir(root: string) {
    const lock = await createAndLock(root, 'lock-'); // staging_lockfile.CreateAndLock(root, "lock-")
    const dir = join(root, `temp-dir-${lock.name.slice('lock-'.length)}`);
    try {
      await mkdir(dir);
    } catch (err) {
      await lock.unlockAndDelete(); // the Go version leaks the lock here
      throw err;
    }
    return {
      dir,
      async cleanup() {
        await rm(dir, { recursive: true, force: true });
        await lock.unlockAndDelete(); // UnlockAndDelete()
      },
    };
  }

  /** tempdir.RecoverStaleDirs: reclaims every entry whose lock is free. */
  async function recoverStaleDirs(root: string): Promise<string[]> {
    const ids = new Set<string>();
    for (const name of await readdir(root)) {
      if (name.startsWith('lock-')) ids.add(name.slice('lock-'.length));
      else if (name.startsWith('temp-dir-')) ids.add(name.slice('temp-dir-'.length));
    }
    const removed: string[] = [];
    for (const id of ids) {
      let lock;
      try {
        lock = await tryLockPath(join(root, `lock-${id}`)); // TryLockPath: creates it when missing
      } catch (err) {
        if (isLockError(err, 'ELOCKED')) continue; // in use: by us, another process, or podman
        throw err;
      }
      try {
        await rm(join(root, `temp-dir-${id}`), { recursive: true, force: true });
        removed.push(id);
      } finally {
        await lock.unlockAndDelete();
      }
    }
    return removed;
  }

  test('example: recovery skips live entries (this process, another process, podman) and reclaims dead ones', async () => {
    await using d = await tempDir();
    const root = d.path;
    // Ours, live.
    const mine = await newTempDir(root);
    await writeFile(join(mine.dir, 'layer.tar'), 'data');
    // Another process's, live; SIGKILLed later.
    const { child, first } = await holder('createAndLock', root, { pattern: 'lock-' });
    const theirs = details(first).name!.slice('lock-'.length);
    await mkdir(join(root, `temp-dir-${theirs}`));
    // podman's (a classic POSIX fcntl lock, as containers/storage takes it).
    const podman = await pyLockf(join(root, 'lock-podman'));
    expect(podman.first).toBe('acquired');
    await mkdir(join(root, 'temp-dir-podman'));
    // A crash leftover: an unlocked lock file and its directory, and a directory whose lock is gone.
    await writeFile(join(root, 'lock-dead'), '');
    await mkdir(join(root, 'temp-dir-dead'));
    await mkdir(join(root, 'temp-dir-orphan'));

    expect((await recoverStaleDirs(root)).sort()).toEqual(['dead', 'orphan']);
    expect(existsSync(join(mine.dir, 'layer.tar'))).toBe(true);
    expect(existsSync(join(root, `temp-dir-${theirs}`))).toBe(true);
    expect(existsSync(join(root, 'temp-dir-podman'))).toBe(true);

    child.proc.kill('SIGKILL');
    await child.reap();
    expect(await recoverStaleDirs(root)).toEqual([theirs]);
    await podman.child.finish();
    expect(await recoverStaleDirs(root)).toEqual(['podman']);

    await mine.cleanup();
    expect(await readdir(root)).toEqual([]);
  });

  test('CreateAndLock returns the name; the path is absolute; the file is 0600 and carries an owner record', async () => {
    await using d = await tempDir();
    await using held = await createAndLock(d.path, 'layer-*.lock');
    expect(held.name).toMatch(/^layer-[0-9a-z]+\.lock$/);
    expect(held.path).toBe(join(d.path, held.name));
    expect((await stat(held.path)).mode & 0o777).toBe(0o600);
    expect((await readOwner(held.path))?.pid).toBe(process.pid);
  });

  test('a second UnlockAndDelete rejects ERELEASED (Go panics); `await using` is idempotent', async () => {
    await using d = await tempDir();
    const held = await tryLockPath(join(d.path, 'staging.lock'));
    await held.unlockAndDelete();
    expect(existsSync(held.path)).toBe(false);
    const err = await lockErrorOf(held.unlockAndDelete());
    expect(err.code).toBe('ERELEASED');
    await held[Symbol.asyncDispose]();
  });

  test('TryLockPath on a path this process holds is ELOCKED (the Go registry\'s "used already with other thread")', async () => {
    await using d = await tempDir();
    await using held = await createAndLock(d.path, 'lock-');
    await expect(tryLockPath(held.path)).rejects.toMatchObject({ code: 'ELOCKED', owner: { pid: process.pid } });
  });
});

// ---------------------------------------------------------------------------
describe('Julia Pidfile', () => {
  // docs/coming-from.md, Julia example 1
  /** mkpidlock(pidfile; stale_age = 10, refresh = 2) do ... end */
  function withPidfile<T>(pidfile: string, fn: () => Promise<T>): Promise<T> {
    return withLock(pidfile, fn, {
      backend: 'lease', // a pidfile: the file's existence is the lock
      staleAfter: 10_000, // stale_age = 10 (seconds there, ms here)
      heartbeat: 2_000, // refresh = 2
      timeout: 120_000, // wait = true, but not forever
    });
  }

  /** mkpidlock(pidfile; stale_age = 10, wait = false), or trymkpidlock: null when held. */
  async function tryPidfile(pidfile: string) {
    try {
      return await tryLock(pidfile, { backend: 'lease', staleAfter: 10_000, heartbeat: 2_000 });
    } catch (err) {
      if (isLockError(err, 'ELOCKED')) return null; // PidlockedError
      throw err;
    }
  }

  test('example 1: the do-block waits for another process; wait = false does not', async () => {
    await using d = await tempDir();
    const pidfile = join(d.path, 'compile.pidfile');
    const { child, first } = await holder('tryLock', pidfile, { backend: 'lease', staleAfter: 10_000, heartbeat: 2_000 });
    const other = details(first);
    const ran: (number | undefined)[] = [];
    const result = withPidfile(pidfile, async () => {
      ran.push((await readOwner(pidfile))?.pid);
      return 'compiled';
    });
    expect(await tryPidfile(pidfile)).toBeNull(); // still the child's
    expect((await readOwner(pidfile))?.pid).toBe(other.pid);
    expect(ran).toEqual([]); // so the do-block is waiting
    expect(await child.finish()).toBe(0);
    expect(await within(result, 20_000, 'withPidfile')).toBe('compiled');
    expect(ran).toEqual([process.pid]);
    expect(existsSync(pidfile)).toBe(false); // close(lock) removed it
    const held = await tryPidfile(pidfile);
    expect(held).toBeInstanceOf(FileLock);
    await held!.release();
  });

  test('a SIGKILLed holder on this host is taken at once: no stale_age wait, no 25x rule', async () => {
    await using d = await tempDir();
    const pidfile = join(d.path, 'compile.pidfile');
    const { child, first } = await holder('tryLock', pidfile, { backend: 'lease', staleAfter: 600_000 });
    details(first);
    child.proc.kill('SIGKILL');
    await child.reap();
    expect(existsSync(pidfile)).toBe(true); // the dead holder's file is still there
    const held = await tryPidfile(pidfile);
    expect(held).toBeInstanceOf(FileLock);
    await held!.release();
  });

  // docs/coming-from.md, Julia example 2
  /** mkpidlock(pidfile, proc): the child is the recorded owner; the lock goes when it exits. */
  async function lockForChild(pidfile: string) {
    const worker = spawn('cat', [], { stdio: ['pipe', 'ignore', 'inherit'] });
    await once(worker, 'spawn');
    const held = await lock(pidfile, { pid: worker, timeout: 30_000 });
    return { worker, held };
  }

  test('example 2: a lock for a child process is released when the child exits', async () => {
    await using d = await tempDir();
    const pidfile = join(d.path, 'worker.pidfile');
    const { worker, held } = await lockForChild(pidfile);
    try {
      expect((await readOwner(pidfile))?.pid).toBe(worker.pid);
      await expect(tryLock(pidfile)).rejects.toMatchObject({ code: 'ELOCKED', owner: { pid: worker.pid } });
      worker.stdin!.end(); // cat exits at EOF
      await within(once(held.signal, 'abort'), 10_000, 'release on child exit');
      expect(isLockError(held.signal.reason, 'ERELEASED')).toBe(true);
      const next = await tryLock(pidfile);
      await next.release();
    } finally {
      worker.kill('SIGKILL');
    }
  });

  test('a lock for a process that is not running rejects ESRCH (Julia: IOError ESRCH)', async () => {
    await using d = await tempDir();
    const pidfile = join(d.path, 'worker.pidfile');
    const worker = spawn(process.execPath, ['-e', '0'], { stdio: 'ignore' });
    await once(worker, 'exit');
    expect((await lockErrorOf(lock(pidfile, { pid: worker }))).code).toBe('ESRCH');
    expect((await lockErrorOf(tryLock(pidfile, { pid: deadPid() }))).code).toBe('ESRCH');
  });

  // docs/coming-from.md, Julia example 3
  /** pid, hostname, age = parse_pidfile(pidfile); isvalidpid(hostname, pid) */
  async function ownerLooksAlive(pidfile: string): Promise<boolean | undefined> {
    const owner = await readOwner(pidfile); // parse_pidfile: null instead of (0, "", 0.0)
    if (owner?.pid === undefined) return undefined; // missing, empty or garbage
    return isProcessAlive(owner.pid, owner.hostname); // isvalidpid(hostname, pid): note the order
  }

  test('example 3: parse_pidfile -> readOwner (reads Julia\'s "pid hostname"), isvalidpid -> isProcessAlive', async () => {
    await using d = await tempDir();
    const pidfile = join(d.path, 'x.pidfile');
    await writeFile(pidfile, `${process.pid} ${hostname()}`);
    expect(await readOwner(pidfile)).toMatchObject({ pid: process.pid, hostname: hostname() });
    expect(await ownerLooksAlive(pidfile)).toBe(true);
    await writeFile(pidfile, `${deadPid()} ${hostname()}`);
    expect(await ownerLooksAlive(pidfile)).toBe(false);
    await writeFile(pidfile, `${deadPid()} some-other-host`);
    expect(await ownerLooksAlive(pidfile)).toBe(true); // another host: cannot tell, so alive
    await writeFile(pidfile, 'garbage');
    expect(await ownerLooksAlive(pidfile)).toBeUndefined();
    await rm(pidfile);
    expect(await ownerLooksAlive(pidfile)).toBeUndefined();
    // Our own lock files parse the same way.
    await using _held = await tryLock(pidfile, { backend: 'lease' });
    expect(await ownerLooksAlive(pidfile)).toBe(true);
  });

  test('isProcessAlive: pid 0 and negative pids are not processes; EPERM (pid 1) is alive', () => {
    expect(isProcessAlive(0)).toBe(false);
    expect(isProcessAlive(-1)).toBe(false);
    expect(isProcessAlive(-process.pid)).toBe(false);
    expect(isProcessAlive(1)).toBe(true);
    expect(isProcessAlive(0, 'some-other-host')).toBe(false); // Julia: true for any pid on another host
  });
});

// ---------------------------------------------------------------------------
describe('proper-lockfile', () => {
  // docs/coming-from.md, proper-lockfile example 1
  /** Before: const release = await lockfile.lock(file, { retries: ... }); ...; await release(); */
  async function bumpBuild(file: string): Promise<number> {
    await using _held = await lock(`${file}.lock`, { timeout: 10_000 }); // a lock file next to it, never `file` itself
    const pkg = JSON.parse(await readFile(file, 'utf8')) as { build: number };
    pkg.build += 1;
    await writeFile(file, JSON.stringify(pkg));
    return pkg.build;
  }

  /** lockfile.check(file) */
  async function isLocked(file: string): Promise<boolean> {
    return (await readOwner(`${file}.lock`))?.held === true;
  }

  test('example 1: lock waits for another process instead of retrying; check() -> readOwner().held', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'build.json');
    await writeFile(file, JSON.stringify({ build: 0 }));
    expect(await isLocked(file)).toBe(false);
    const { child, first } = await holder('tryLock', `${file}.lock`);
    details(first);
    expect(await isLocked(file)).toBe(true);
    const bumped = bumpBuild(file);
    await expect(tryLock(`${file}.lock`)).rejects.toMatchObject({ code: 'ELOCKED' }); // still the child's
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ build: 0 });
    expect(await child.finish()).toBe(0);
    expect(await within(bumped, 20_000, 'bumpBuild')).toBe(1);
    expect(await isLocked(file)).toBe(false);
    // In one process too: concurrent callers queue up, none is lost.
    const all = await Promise.all(Array.from({ length: 8 }, () => bumpBuild(file)));
    expect(all.sort((a, b) => a - b)).toEqual([2, 3, 4, 5, 6, 7, 8, 9]);
    expect(JSON.parse(await readFile(file, 'utf8'))).toEqual({ build: 9 });
  });

  test('retries exhausted (ELOCKED there) -> timeout: ETIMEDOUT', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'build.json');
    const { child, first } = await holder('tryLock', `${file}.lock`);
    details(first);
    const err = await lockErrorOf(lock(`${file}.lock`, { timeout: 200 }));
    expect(err.code).toBe('ETIMEDOUT');
    expect(await child.finish()).toBe(0);
  });

  test('the file you lock is created if missing (realpath: true would reject ENOENT)', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'missing.json.lock');
    await (await lock(p)).release();
    expect(existsSync(p)).toBe(true); // kept: the kernel backend does not delete on release
  });

  test('why a separate lock path: the kernel backend writes its owner record into an empty file it locks', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'data.json');
    await writeFile(file, '{"precious":true}');
    await (await tryLock(file, { backend: 'kernel' })).release();
    expect(await readFile(file, 'utf8')).toBe('{"precious":true}'); // another program's bytes: kept
    await writeFile(file, ''); // but a data file that is empty when locked gets our record
    await (await tryLock(file, { backend: 'kernel' })).release();
    expect((await readOwner(file))?.pid).toBe(process.pid);
  });

  // docs/coming-from.md, proper-lockfile example 2
  /** stale/update/onCompromised: a lease whose loss stops the work before it is published. */
  async function saveWithLease(
    file: string,
    produce: (signal: AbortSignal) => Promise<string>,
    onCompromised: (err: LockError) => void,
  ): Promise<void> {
    const held = await lock(`${file}.lock`, {
      backend: 'lease',
      staleAfter: 10_000, // stale
      heartbeat: 1_000, // update
      timeout: 30_000, // retries
      onCompromised, // called once, never thrown (proper-lockfile's default throws)
    });
    try {
      const data = await produce(held.signal); // hand the signal to your own I/O
      held.signal.throwIfAborted(); // lost meanwhile? then do not publish
      await writeFile(`${file}.tmp`, data);
      await rename(`${file}.tmp`, file);
    } finally {
      await held.release(); // rejects ECOMPROMISED when the lease was lost
    }
  }

  test('example 2: a lost lease aborts held.signal, nothing is published, release rejects ECOMPROMISED', async () => {
    await using d = await tempDir();
    const file = join(d.path, 'state.json');
    const reported: string[] = [];
    await saveWithLease(
      file,
      async () => 'v1',
      (e) => reported.push(e.code),
    );
    expect(await readFile(file, 'utf8')).toBe('v1');
    expect(existsSync(`${file}.lock`)).toBe(false);
    const err = await lockErrorOf(
      saveWithLease(
        file,
        async (signal) => {
          await rm(`${file}.lock`); // someone deletes the lock file while we work
          await once(signal, 'abort'); // the next heartbeat notices
          return 'v2';
        },
        (e) => reported.push(e.code),
      ),
    );
    expect(err.code).toBe('ECOMPROMISED');
    expect(reported).toEqual(['ECOMPROMISED']);
    expect(await readFile(file, 'utf8')).toBe('v1');
  });

  test("inside `await using`, a lost lease surfaces as a SuppressedError whose `error` is the release's ECOMPROMISED", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'state.json.lock');
    const err = await (async () => {
      await using held = await tryLock(p, { backend: 'lease', staleAfter: 5_000 });
      await rm(p);
      await held.release().catch(() => undefined); // already rejected: the dispose rejects the same way
      throw new Error('body');
    })().catch((e: unknown) => e);
    expect(err).toMatchObject({ name: 'SuppressedError' });
    expect(isLockError((err as { error: unknown }).error, 'ECOMPROMISED')).toBe(true);
  });
});
