/**
 * Issue 13: `recover()` reclaims each entry in one native call
 * (packages/core/native/sweep.c through `@x/core/sweep`). What that call
 * must keep of docs/staging-protocol.md ("Recovery"): a huge entry is
 * removed in time slices with the lock held in between (the event loop
 * runs), a directory of another filesystem is never entered, a lock file
 * holding a lease record is judged as a lease, and a removal that fails
 * leaves the lock file and reports the entry.
 */
import { isLockError, tryLock } from '@x/core';
import { EntryReclaimer } from '@x/core/sweep';
import { StagingArea } from '@x/staging';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { rootNames, staleEntry } from './helpers/area.js';
import { reapAll } from './helpers/child.js';
import { canMount, tmpfs } from './helpers/mounts.js';
import { haveTools } from './helpers/tools.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

/** A stale entry `<id>` of our layout made by hand: a free lock file and a directory. */
function handEntry(root: string, id: string): { lockPath: string; dir: string } {
  const lockPath = join(root, `lock-${id}`);
  writeFileSync(lockPath, '{"v":1,"backend":"kernel","pid":2147483646,"hostname":"gone","createdAt":1}\n');
  const dir = join(root, id);
  mkdirSync(dir);
  return { lockPath, dir };
}

test('a huge entry is removed over several turns of the event loop, its lock held in between', async () => {
  await using d = await tempDir();
  const area = await StagingArea.open(join(d.path, 'staging'));
  const { lockPath, dir } = handEntry(area.root, 'huge');
  const FILES = 20_000;
  for (let i = 0; i < FILES; i++) writeFileSync(join(dir, `f${i}`), 'x');
  mkdirSync(join(dir, 'sub', 'deeper'), { recursive: true });
  writeFileSync(join(dir, 'sub', 'deeper', 'last'), '12345');

  // Count the turns of the event loop while recover() runs, and once,
  // mid-sweep, check that the entry's lock is held (by the sweep).
  let turns = 0;
  let heldMidway: boolean | undefined;
  let done = false;
  const turn = (): void => {
    if (done) return;
    turns++;
    if (heldMidway === undefined && existsSync(dir)) {
      void tryLock(lockPath, { create: false }).then(
        (l) => {
          heldMidway = false;
          return l.release();
        },
        (err: unknown) => {
          heldMidway = isLockError(err, 'ELOCKED');
        },
      );
    }
    setImmediate(turn);
  };
  setImmediate(turn);
  const report = await area.recover();
  done = true;
  expect(report).toMatchObject({ scanned: 1, removed: 1, live: 0, errors: [], bytesFreed: FILES + 5 });
  expect(rootNames(area.root)).toEqual([]);
  // 20k unlinks take far longer than one slice (a few ms): the loop ran in
  // between. Without the native time budget the whole entry goes in one call.
  expect(turns).toBeGreaterThan(1);
  expect(heldMidway).toBe(true);
});

test('a lock file holding a live lease record is judged as a lease: the entry stays; a stale kernel entry beside it goes', async () => {
  await using d = await tempDir();
  const area = await StagingArea.open(join(d.path, 'staging'));
  const lease = await tryLock(join(area.root, 'lock-leased'), { backend: 'lease' });
  try {
    mkdirSync(join(area.root, 'leased'));
    writeFileSync(join(area.root, 'leased', 'data'), 'keep');
    const stale = await staleEntry(area.root);
    const report = await area.recover();
    expect(report).toMatchObject({ scanned: 2, removed: 1, live: 1, errors: [] });
    expect(readFileSync(join(area.root, 'leased', 'data'), 'utf8')).toBe('keep');
    expect(existsSync(stale.path) || existsSync(stale.lockPath)).toBe(false);
  } finally {
    await lease.release();
  }
});

describe.runIf(canMount())('the device fence of the native removal', () => {
  test('a mount inside an entry (not in the fence given to recover) is neither entered nor removed: EBUSY, the lock file stays', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'staging');
    mkdirSync(root);
    const { lockPath, dir } = handEntry(root, 'mounted');
    writeFileSync(join(dir, 'a.txt'), 'a');
    await using m = tmpfs('size=64k', dir);
    writeFileSync(join(m.path, 'on-tmpfs.txt'), 'keep me');
    // The reclaimer alone: recover() would route this entry to the JS
    // removal, as the mount is in /proc/self/mountinfo; the native call has
    // its own device check for mounts the table did not show.
    const reclaimer = EntryReclaimer.open(root)!;
    expect(reclaimer).not.toBeNull();
    let r;
    try {
      r = reclaimer.reclaim('lock-mounted', ['mounted', 'temp-dir-mounted'], 1000);
    } finally {
      reclaimer.close();
    }
    expect(r).toMatchObject({ code: 'EBUSY', path: m.path, entry: dir, mountPoint: true });
    expect(readFileSync(join(m.path, 'on-tmpfs.txt'), 'utf8')).toBe('keep me');
    expect(readdirSync(dir)).toEqual([m.path.slice(dir.length + 1)]);
    expect(existsSync(lockPath)).toBe(true);
    // The lock was released: the entry can be taken again.
    await (await tryLock(lockPath, { create: false })).release();
  });
});

describe.runIf(haveTools('chattr'))('a removal that fails', () => {
  test('an immutable file: the entry is reported (EPERM on the file), its lock file stays, the other entries go', async (ctx) => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'staging'));
    const { lockPath, dir } = handEntry(area.root, 'stuck');
    writeFileSync(join(dir, 'a.txt'), 'a');
    const stuck = join(dir, 'stuck.txt');
    writeFileSync(stuck, 's');
    if (spawnSync('chattr', ['+i', stuck]).status !== 0) ctx.skip(); // a filesystem without attributes
    try {
      const other = await staleEntry(area.root);
      const report = await area.recover();
      expect(report).toMatchObject({ scanned: 2, removed: 1, live: 0 });
      expect(report.errors).toHaveLength(1);
      const [{ path, error }] = report.errors as [{ path: string; error: NodeJS.ErrnoException }];
      expect(path).toBe(dir);
      expect(error).toMatchObject({ code: 'EPERM', syscall: 'unlink', path: stuck });
      expect(error.message).toBe(`EPERM: operation not permitted, unlink '${stuck}'`);
      expect(existsSync(lockPath)).toBe(true);
      expect(readdirSync(dir)).toEqual(['stuck.txt']);
      expect(existsSync(other.path) || existsSync(other.lockPath)).toBe(false);
    } finally {
      spawnSync('chattr', ['-i', stuck]);
    }
  });
});
