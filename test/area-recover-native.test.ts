/**
 * Issue 13: `recover()` reclaims each entry in one native call
 * (packages/core/native/sweep.c through `@x/core/sweep`). What that call
 * must keep of docs/staging-protocol.md ("Recovery"): a huge entry is
 * removed in time slices with the lock held in between (the event loop
 * runs), a directory of another filesystem is never entered, a lock file
 * holding a lease record is judged as a lease, and a removal that fails
 * leaves the lock file and reports the entry. And the sweep's loop over
 * the root is native too: only the names it cannot settle reach JS.
 */
import { isLockError, tryLock } from '@x/core';
import { EntryReclaimer, SWEEP_LANES } from '@x/core/sweep';
import { StagingArea } from '@x/staging';
import { spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { rootNames, staleEntry, worker } from './helpers/area.js';
import { reapAll } from './helpers/child.js';
import { canMount, tmpfs } from './helpers/mounts.js';
import { straceNode } from './helpers/strace.js';
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

test('the native loop reclaims stale entries, skips the directories of existing lock files and a live entry, and hands JS only the other names', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'staging');
  mkdirSync(root);
  const STALE = 300;
  for (let i = 0; i < STALE; i++) writeFileSync(join(handEntry(root, `s${i}`).dir, 'data'), 'abc');
  // Held by another process: its lock file and its directory stay.
  const live = await worker(root, 'cleanup');
  // Names the native loop leaves to the caller (untouched here: step() only reports them).
  writeFileSync(join(root, 'Notes.txt'), 'n');
  writeFileSync(join(root, 'lock-'), '');
  mkdirSync(join(root, 'temp-dir-77'));
  mkdirSync(join(root, 'orph'));
  writeFileSync(join(root, '.xlock-a.tmp'), '');

  const reclaimer = EntryReclaimer.open(root)!;
  const handed: string[] = [];
  const total = { removed: 0, live: 0, bytes: 0 };
  try {
    for (;;) {
      const s = reclaimer.step(1000, false);
      if (s === null) throw new Error('the addon has no native sweep loop');
      total.removed += s.removed;
      total.live += s.live;
      total.bytes += s.bytes;
      if (s.stop === 'name') handed.push(s.name);
      expect(s.stop).not.toBe('error');
      if (s.stop === 'end') break;
    }
  } finally {
    reclaimer.close();
  }
  // Neither a stale entry's directory (whichever of it and its lock file the
  // listing shows first) nor the live entry's reached JS.
  expect(handed.filter((n) => n !== '.xstage-area').sort()).toEqual([
    '.xlock-a.tmp',
    'Notes.txt',
    'lock-',
    'orph',
    'temp-dir-77',
  ]);
  expect(total).toEqual({ removed: STALE, live: 1, bytes: 3 * STALE });
  expect(rootNames(root)).toEqual(
    ['.xlock-a.tmp', 'Notes.txt', 'lock-', 'orph', 'temp-dir-77', live.entry.id, `lock-${live.entry.id}`].sort(),
  );
  live.child.proc.stdin!.end();
  expect(await live.child.line()).toBe('released');
  expect(await live.child.finish()).toBe(0);
});

test('the background loop: cancelled before it starts it touches nothing; otherwise it reclaims every stale entry while the event loop runs, in turns of its budget', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'staging');
  mkdirSync(root);
  const STALE = 200;
  for (let i = 0; i < STALE; i++) writeFileSync(join(handEntry(root, `s${i}`).dir, 'data'), 'abc');
  const before = rootNames(root);

  const cancelled = EntryReclaimer.open(root)!;
  try {
    cancelled.cancel();
    expect(await cancelled.run(60_000)).toEqual({ stop: 'cancelled', removed: 0, live: 0, bytes: 0 });
  } finally {
    cancelled.close();
  }
  expect(rootNames(root)).toEqual(before);

  const reclaimer = EntryReclaimer.open(root)!;
  let turns = 0;
  let running = true;
  const turn = (): void => {
    turns++;
    if (running) setImmediate(turn);
  };
  setImmediate(turn);
  const total = { removed: 0, live: 0, bytes: 0 };
  try {
    // A budget of 0: the pool thread is given back after one name (an entry never cut short).
    const first = await reclaimer.run(0);
    expect(first?.stop).toBe('slice');
    expect(first!.removed).toBeLessThanOrEqual(1);
    for (let s = first!; ; s = (await reclaimer.run(60_000))!) {
      total.removed += s.removed;
      total.live += s.live;
      total.bytes += s.bytes;
      if (s.stop === 'end') break;
      expect(s.stop).toBe('slice');
    }
  } finally {
    running = false;
    reclaimer.close();
  }
  expect(total).toEqual({ removed: STALE, live: 0, bytes: 3 * STALE });
  expect(rootNames(root)).toEqual([]);
  // The promise settled on a later turn: the loop ran while the pool thread swept.
  expect(turns).toBeGreaterThan(0);
});

test('two lanes at once share the listing: every stale entry is reclaimed once, every other name handed to exactly one lane', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'staging');
  mkdirSync(root);
  const STALE = 300;
  const ODD = 60;
  for (let i = 0; i < STALE; i++) writeFileSync(join(handEntry(root, `s${i}`).dir, 'data'), 'abc');
  const odd = Array.from({ length: ODD }, (_, i) => `Odd-${i}`);
  for (const n of odd) writeFileSync(join(root, n), '');
  const reclaimer = EntryReclaimer.open(root)!;
  const handed: string[] = [];
  const total = { removed: 0, live: 0, bytes: 0 };
  const lane = async (k: number): Promise<void> => {
    for (;;) {
      const s = (await reclaimer.run(60_000, k))!;
      total.removed += s.removed;
      total.live += s.live;
      total.bytes += s.bytes;
      if (s.stop === 'end') return;
      expect(s.stop).toBe('name');
      if (s.stop === 'name') handed.push(s.name);
    }
  };
  try {
    expect(SWEEP_LANES).toBeGreaterThan(1);
    await Promise.all([lane(0), lane(1)]);
  } finally {
    reclaimer.close();
  }
  expect(total).toEqual({ removed: STALE, live: 0, bytes: 3 * STALE });
  expect(handed.sort()).toEqual([...odd].sort());
  expect(rootNames(root)).toEqual([...odd].sort());
});

test('recover() aborted while the background loop runs: rejects with the reason; every entry is whole or gone', async () => {
  await using d = await tempDir();
  const area = await StagingArea.open(join(d.path, 'staging'));
  const STALE = 500;
  for (let i = 0; i < STALE; i++) writeFileSync(join(handEntry(area.root, `s${i}`).dir, 'data'), 'abc');
  const ac = new AbortController();
  const reason = new Error('stop');
  const sweep = area.recover({ signal: ac.signal });
  ac.abort(reason);
  await expect(sweep).rejects.toBe(reason);
  const names = new Set(rootNames(area.root));
  for (let i = 0; i < STALE; i++) expect(names.has(`s${i}`), `s${i}`).toBe(names.has(`lock-s${i}`));
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

/**
 * The background sweep runs on threads of its own, never on libuv's pool,
 * which the process's own fs calls share (docs/contract.md 3.3 item 4, and
 * recover()'s promise: "never occupying libuv's threadpool"). With a pool of
 * one thread, the thread that stats a file for fs.promises is that pool;
 * strace shows which threads read the root.
 */
const sweepBesidePool = `
import { StagingArea } from '@x/staging';
import { stat } from 'node:fs/promises';
const area = await StagingArea.open(process.argv[1], { create: false }); // no emptiness check on the pool
const marker = process.argv[2];
const sweeping = area.recover();
await stat(marker); // on the one pool thread, while the sweep runs
const report = await sweeping;
console.log(JSON.stringify({ removed: report.removed }));
`;

test.runIf(haveTools('strace'))('the background sweep never runs on a thread of libuv\u2019s pool', async () => {
  await using d = await tempDir();
  const root = join(d.path, 'staging');
  await StagingArea.open(root);
  for (let i = 0; i < 200; i++) handEntry(root, `e${i}`);
  const marker = join(d.path, 'marker');
  writeFileSync(marker, '');
  const { lines, stdout } = straceNode('getdents64,statx,newfstatat', sweepBesidePool, [root, marker], {
    paths: true,
    env: { ...process.env, UV_THREADPOOL_SIZE: '1' },
  });
  expect(JSON.parse(stdout.trim())).toEqual({ removed: 200 });
  const tid = (l: string) => l.split(/\s+/)[0];
  const pool = lines.find((l) => l.includes(`${marker}"`) && (l.includes('statx(') || l.includes('newfstatat(')));
  expect(pool).toBeDefined();
  const sweepers = new Set(lines.filter((l) => l.includes('getdents64(') && l.includes(`${root}>`)).map(tid));
  expect(sweepers.size).toBeGreaterThan(0);
  expect(sweepers.has(tid(pool!))).toBe(false);
});
