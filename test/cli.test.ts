/**
 * The `xstage` command line (docs/contract.md 4.3), run as a real child process
 * (`node packages/staging/bin/xstage.js ...`): `run` holds the lock while the
 * command runs and exits with the command's own status, 75 when the lock is
 * busy or the wait timed out, 64 for a usage error (running nothing), 127
 * for a command that is not found; `--wait` waits for the holder (proved by
 * the kernel's list of blocked lock waiters, /proc/locks, not by a sleep);
 * `status --json` prints the documented schema for a lock file and for a
 * staging root, and changes nothing; `recover --dry-run` changes nothing and
 * reports what it would remove; `recover --json` removes the stale entries
 * and prints its report; `--help` works on every command.
 */
import { existsSync, mkdirSync, readdirSync, readFileSync, symlinkSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { rootNames, snapshot, staleEntry, worker } from './helpers/area.js';
import { fixture, holder, reapAll } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';
import { killXstage, xstage, xstageStart } from './helpers/xstage.js';
import { blockedWaiter } from './helpers/proclocks.js';

afterEach(async () => {
  killXstage();
  await reapAll();
});

/** `node -e <script> ...args` as a command for `run`. */
const nodeCmd = (script: string, ...args: string[]): string[] => [process.execPath, '-e', script, ...args];
/** A command that creates `marker` (to tell whether it ran). */
const touch = (marker: string): string[] => nodeCmd("require('fs').writeFileSync(process.argv[1], String(process.pid))", marker);

function keys(o: object): string[] {
  return Object.keys(o).sort();
}

const LOCK_KEYS = ['kind', 'path', 'state', 'pid', 'hostname', 'backend', 'age', 'startedAt', 'shared', 'holders'].sort();
const ENTRY_KEYS = [
  'id',
  'path',
  'layout',
  'lockPath',
  'hasDir',
  'state',
  'pid',
  'hostname',
  'backend',
  'age',
  'startedAt',
  'shared',
  'holders',
].sort();
const ROOT_KEYS = ['kind', 'root', 'entries', 'held', 'stale', 'unknown'].sort();
/** The owner fields of `status --json` for a lock file or entry that names no one. */
const NO_OWNER = { pid: null, hostname: null, backend: null, age: null, startedAt: null, shared: null, holders: null };
const RECOVER_KEYS = [
  'root',
  'dryRun',
  'scanned',
  'removed',
  'live',
  'bytesFreed',
  'elapsedMs',
  'errors',
  'errorsOmitted',
  'skipped',
  'skippedOmitted',
].sort();

describe('run', () => {
  test("exits with the command's own status, holds the lock while it runs, and leaves it free with an owner record", async () => {
    await using d = await tempDir();
    const lock = join(d.path, 'job.lock');
    expect((await xstage('run', lock, '--', ...nodeCmd('process.exit(7)'))).code).toBe(7);
    expect((await xstage('run', lock, '--', ...nodeCmd('process.exit(0)'))).code).toBe(0);
    // flock(1) style, without `--`.
    expect((await xstage('run', lock, ...nodeCmd('process.exit(9)'))).code).toBe(9);
    // A command killed by a signal: 128 + N.
    expect((await xstage('run', lock, '--', ...nodeCmd("process.kill(process.pid, 'SIGTERM')"))).code).toBe(128 + 15);

    // While the command runs, the lock is held: a try-lock from the command itself fails (holder.mjs exits 3).
    const inside = xstageStart(['run', lock, '--', process.execPath, fixture('holder.mjs'), 'tryLock', lock]);
    const r = await inside.done;
    expect(r.stdout).toBe('error ELOCKED\n');
    expect(r.code).toBe(3);

    // Afterwards it is free; the file stays, with the last holder's record.
    const st = await xstage('status', '--json', lock);
    expect(st.code).toBe(0);
    expect(JSON.parse(st.stdout)).toMatchObject({
      kind: 'lock',
      path: lock,
      state: 'free',
      pid: inside.proc.pid,
      backend: 'kernel',
    });
  });

  test('127 when the command is not found; 126 when it cannot be executed; 66 when the lock file cannot be opened', async () => {
    await using d = await tempDir();
    const lock = join(d.path, 'job.lock');
    const missing = await xstage('run', lock, '--', join(d.path, 'no-such-command'));
    expect(missing.code).toBe(127);
    expect(missing.stderr).not.toBe('');
    const notExec = join(d.path, 'not-executable');
    writeFileSync(notExec, '#!/bin/sh\nexit 0\n', { mode: 0o644 });
    expect((await xstage('run', lock, '--', notExec)).code).toBe(126);
    expect((await xstage('run', lock, '--', ...nodeCmd('process.exit(5)'))).code).toBe(5);
    // 66: the lock file cannot be opened (its directory is missing).
    expect((await xstage('run', join(d.path, 'no-dir', 'job.lock'), '--', ...nodeCmd('process.exit(5)'))).code).toBe(66);
  });

  test('75 at once when another process holds the lock; the command does not run', async () => {
    await using d = await tempDir();
    const lock = join(d.path, 'job.lock');
    const marker = join(d.path, 'ran');
    const { child, first } = await holder('tryLock', lock);
    expect(first).toMatch(/^acquired /);
    const busy = await xstage('run', lock, '--', ...touch(marker));
    expect(busy.code).toBe(75);
    expect(busy.stderr).toContain(String(child.proc.pid)); // who holds it
    expect((await xstage('run', '--timeout', '0', lock, '--', ...touch(marker))).code).toBe(75);
    expect(existsSync(marker)).toBe(false);
    expect(await child.finish()).toBe(0);
    // Free now.
    expect((await xstage('run', lock, '--', ...touch(marker))).code).toBe(0);
    expect(existsSync(marker)).toBe(true);
  });

  test('75 after --timeout 0.3 while held: waits about that long, then gives up without running the command', async () => {
    await using d = await tempDir();
    const lock = join(d.path, 'job.lock');
    const marker = join(d.path, 'ran');
    const { child } = await holder('tryLock', lock);
    const r = await xstage('run', '--timeout', '0.3', lock, '--', ...touch(marker));
    expect(r.code).toBe(75);
    expect(r.ms).toBeGreaterThanOrEqual(300);
    expect(r.ms).toBeLessThan(10_000);
    expect(existsSync(marker)).toBe(false);
    expect(await child.finish()).toBe(0);
  });

  test.each([[['--wait']], [['--timeout', '30']], [['--wait', '--timeout', '30.5']]])(
    'run %j waits while held and runs the command once the holder releases',
    async (opts) => {
      await using d = await tempDir();
      const lock = join(d.path, 'job.lock');
      const marker = join(d.path, 'ran');
      const { child } = await holder('tryLock', lock);
      const waiting = xstageStart(['run', ...opts, lock, '--', ...touch(marker)]);
      await Promise.race([
        blockedWaiter(lock),
        waiting.done.then((r) => Promise.reject(new Error(`xstage exited early: ${JSON.stringify(r)}`))),
      ]);
      expect(existsSync(marker)).toBe(false);
      expect(await child.finish()).toBe(0);
      const r = await waiting.done;
      expect(r.code).toBe(0);
      expect(readFileSync(marker, 'utf8')).not.toBe('');
    },
  );

  test.each([
    [[]],
    [['nonsense-command']],
    [['run']],
    [['run', '--bogus', 'L', '--', 'true']],
    [['run', '-x', 'L', '--', 'true']],
    [['run', '--timeout', 'abc', 'L', '--', 'true']],
    [['run', '--timeout', '-1', 'L', '--', 'true']],
    [['run', '--timeout', '', 'L', '--', 'true']],
    [['run', '--timeout', '0x10', 'L', '--', 'true']],
    [['run', '--timeout', '1e3', 'L', '--', 'true']],
    [['run', '--timeout', 'Infinity', 'L', '--', 'true']],
    [['run', 'L', '--']],
    [['run', '--', 'true']],
    [['run', '--wait=yes', 'L', '--', 'true']],
    [['status']],
    [['status', '--bogus', 'L']],
    [['status', 'L', 'M']],
    [['recover']],
    [['recover', '--dry-run=yes', 'R']],
    [['recover', 'R', 'S']],
    [['demo', '--workers', '0']],
    [['demo', 'extra']],
    [['help', 'bogus']],
  ])('usage error %j: 64, a message on stderr, nothing run or created', async (template) => {
    await using d = await tempDir();
    const L = join(d.path, 'L');
    const R = join(d.path, 'R');
    mkdirSync(R);
    const marker = join(d.path, 'ran');
    const args = template.map((a) => (a === 'L' ? L : a === 'R' ? R : a === 'true' ? '__TOUCH__' : a));
    const expanded = args.flatMap((a) => (a === '__TOUCH__' ? touch(marker) : [a]));
    const r = await xstage(...expanded);
    expect(r.code).toBe(64);
    expect(r.stderr).not.toBe('');
    expect(existsSync(marker)).toBe(false);
    expect(readdirSync(d.path)).toEqual(['R']); // no lock file created
    expect(readdirSync(R)).toEqual([]);
  });
});

describe('status', () => {
  test('--json <lockpath>: the schema for a held lock, a free lock and a missing file', async () => {
    await using d = await tempDir();
    const lock = join(d.path, 'job.lock');
    const t0 = Date.now();
    const { child } = await holder('tryLock', lock);
    const before = snapshot(d.path);
    const held = await xstage('status', '--json', lock);
    expect(snapshot(d.path)).toEqual(before); // a probe changes nothing
    expect(held.code).toBe(0);
    expect(held.stdout.endsWith('\n') && held.stdout.trim().split('\n')).toHaveLength(1);
    const h = JSON.parse(held.stdout) as Record<string, unknown>;
    expect(keys(h)).toEqual(LOCK_KEYS);
    expect(h).toMatchObject({
      kind: 'lock',
      path: lock,
      state: 'held',
      pid: child.proc.pid,
      hostname: hostname(),
      backend: 'kernel',
      shared: false,
      holders: [{ kind: 'ofd', shared: false }],
    });
    expect(h.age).toEqual(expect.any(Number));
    expect(h.age as number).toBeGreaterThanOrEqual(0);
    expect(h.startedAt).toEqual(expect.any(Number));
    expect(h.startedAt as number).toBeGreaterThanOrEqual(t0 - 1000);
    expect(h.startedAt as number).toBeLessThanOrEqual(Date.now());
    // The holder is undisturbed.
    expect(await child.finish()).toBe(0);

    const free = JSON.parse((await xstage('status', '--json', lock)).stdout) as Record<string, unknown>;
    expect(keys(free)).toEqual(LOCK_KEYS);
    expect(free).toMatchObject({
      kind: 'lock',
      path: lock,
      state: 'free',
      pid: child.proc.pid,
      hostname: hostname(),
      backend: 'kernel',
    });

    const gone = join(d.path, 'never');
    const missing = await xstage('status', '--json', gone);
    expect(missing.code).toBe(0);
    expect(JSON.parse(missing.stdout)).toEqual({
      kind: 'lock',
      path: gone,
      state: 'missing',
      ...NO_OWNER,
    });
    expect(existsSync(gone)).toBe(false);
  });

  test('--json <root>: the schema for a staging root with a held entry and stale ones; changes nothing', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const { child, entry: live } = await worker(root, 'cleanup');
    const stale = await staleEntry(root, 'SIGKILL');
    mkdirSync(join(root, 'orphan'));
    const before = snapshot(root);
    const r = await xstage('status', '--json', root);
    expect(snapshot(root)).toEqual(before);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as { entries: Record<string, unknown>[] } & Record<string, unknown>;
    expect(keys(doc)).toEqual(ROOT_KEYS);
    expect(doc).toMatchObject({ kind: 'root', root, held: 1, stale: 2, unknown: 0 });
    for (const e of doc.entries) expect(keys(e)).toEqual(ENTRY_KEYS);
    const byId = Object.fromEntries(doc.entries.map((e) => [e.id, e]));
    expect(Object.keys(byId).sort()).toEqual([live.id, stale.id, 'orphan'].sort());
    expect(byId[live.id]).toMatchObject({
      path: live.path,
      lockPath: live.lockPath,
      hasDir: true,
      state: 'held',
      pid: live.pid,
      hostname: hostname(),
      backend: 'kernel',
    });
    expect(byId[stale.id]).toMatchObject({
      path: stale.path,
      lockPath: stale.lockPath,
      hasDir: true,
      state: 'free',
      pid: stale.pid,
      backend: 'kernel',
    });
    expect(byId.orphan).toEqual({
      id: 'orphan',
      path: join(root, 'orphan'),
      layout: 'xstage',
      lockPath: join(root, 'lock-orphan'),
      hasDir: true,
      state: 'missing',
      ...NO_OWNER,
    });
    // The text form lists the same entries.
    const text = await xstage('status', root);
    expect(text.code).toBe(0);
    for (const id of [live.id, stale.id, 'orphan']) expect(text.stdout).toContain(id);
    expect(snapshot(root)).toEqual(before);
    expect(await child.finish()).toBe(0);
  });
});

describe('recover', () => {
  test('--dry-run deletes nothing (the tree is identical) and reports what it would remove', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const { child, entry: live } = await worker(root, 'cleanup', 10);
    await staleEntry(root, 'exit', 100);
    await staleEntry(root, 'SIGKILL', 1000);
    const before = snapshot(root);

    const text = await xstage('recover', '--dry-run', root);
    expect(text.code).toBe(0);
    expect(text.stdout).toMatch(/would remove 2 of 3 entries/);
    expect(snapshot(root)).toEqual(before);

    const json = await xstage('recover', '--dry-run', '--json', root);
    expect(json.code).toBe(0);
    const doc = JSON.parse(json.stdout) as Record<string, unknown>;
    expect(keys(doc)).toEqual(RECOVER_KEYS);
    expect(doc).toMatchObject({ root, dryRun: true, scanned: 3, removed: 2, live: 1, bytesFreed: 1100, errors: [] });
    expect(doc.elapsedMs).toEqual(expect.any(Number));
    expect(snapshot(root)).toEqual(before);
    expect(existsSync(live.path)).toBe(true);
    expect(await child.finish()).toBe(0);
  });

  test('--json removes the stale entries, leaves the live one, and prints the report', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const { child, entry: live } = await worker(root, 'cleanup', 10);
    const a = await staleEntry(root, 'exit', 100);
    const b = await staleEntry(root, 'SIGKILL', 1000);
    const liveBefore = snapshot(live.path);
    const r = await xstage('recover', '--json', root);
    expect(r.code).toBe(0);
    const doc = JSON.parse(r.stdout) as Record<string, unknown>;
    expect(keys(doc)).toEqual(RECOVER_KEYS);
    expect(doc).toMatchObject({ root, dryRun: false, scanned: 3, removed: 2, live: 1, bytesFreed: 1100, errors: [] });
    expect(rootNames(root)).toEqual([live.id, `lock-${live.id}`].sort());
    expect(snapshot(live.path)).toEqual(liveBefore);
    for (const p of [a.path, a.lockPath, b.path, b.lockPath]) expect(existsSync(p)).toBe(false);
    // The text form, on what is left: nothing to remove.
    const again = await xstage('recover', root);
    expect(again.code).toBe(0);
    expect(again.stdout).toMatch(/removed 0 of 1 entry/);
    expect(await child.finish()).toBe(0);
    expect(rootNames(root)).toEqual([]);
  });

  test('exits 1 and lists the failures when an entry cannot be recovered; 66 when the root is missing', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    mkdirSync(root, { mode: 0o700 });
    writeFileSync(join(root, '.xstage-area'), ''); // a staging area made by hand
    writeFileSync(join(d.path, 'target'), 'outside');
    symlinkSync(join(d.path, 'target'), join(root, 'lock-planted')); // a lock path that is a symlink: never opened
    const stale = await staleEntry(root, 'exit');
    const r = await xstage('recover', '--json', root);
    expect(r.code).toBe(1);
    const doc = JSON.parse(r.stdout) as { errors: Record<string, unknown>[] } & Record<string, unknown>;
    expect(doc).toMatchObject({ scanned: 2, removed: 1, live: 0 });
    expect(doc.errors).toHaveLength(1);
    expect(keys(doc.errors[0]!)).toEqual(['code', 'message', 'path']);
    expect(doc.errors[0]!.path).toBe(join(root, 'lock-planted'));
    expect(existsSync(stale.path)).toBe(false);
    expect(readFileSync(join(d.path, 'target'), 'utf8')).toBe('outside');
    expect((await xstage('recover', join(d.path, 'missing'))).code).toBe(66);
    expect(existsSync(join(d.path, 'missing'))).toBe(false);
  });
});

describe('help', () => {
  test.each([
    [['--help'], 'Usage: xstage <command>'],
    [['-h'], 'Usage: xstage <command>'],
    [['help'], 'Usage: xstage <command>'],
    [['run', '--help'], 'Usage: xstage run '],
    [['run', '-h'], 'Usage: xstage run '],
    [['status', '--help'], 'Usage: xstage status '],
    [['recover', '--help'], 'Usage: xstage recover '],
    [['demo', '--help'], 'Usage: xstage demo '],
    [['help', 'run'], 'Usage: xstage run '],
    [['help', 'status'], 'Usage: xstage status '],
    [['help', 'recover'], 'Usage: xstage recover '],
    [['help', 'demo'], 'Usage: xstage demo '],
  ])('%j exits 0 with its usage on stdout', async (args, head) => {
    const r = await xstage(...args);
    expect(r.code).toBe(0);
    expect(r.stdout.startsWith(head)).toBe(true);
    expect(r.stderr).toBe('');
  });

  test('every command has its own --help that lists its exit status', async () => {
    for (const cmd of ['run', 'status', 'recover', 'demo']) {
      const r = await xstage(cmd, '--help');
      expect(r.code, cmd).toBe(0);
      expect(r.stdout, cmd).toMatch(/Exit status/);
    }
  });
});

describe('a directory that is not a staging area', () => {
  test('recover and status refuse it (66) and change nothing; recover --force sweeps it', async () => {
    await using d = await tempDir();
    const dir = join(d.path, 'photos');
    mkdirSync(dir);
    mkdirSync(join(dir, '2024'));
    writeFileSync(join(dir, '2024', 'a.jpg'), 'jpeg');
    writeFileSync(join(dir, 'notes.txt'), 'hi');
    const before = snapshot(dir);
    for (const args of [
      ['recover', dir],
      ['recover', '--json', dir],
      ['status', dir],
      ['status', '--json', dir],
    ]) {
      const r = await xstage(...args);
      expect(r.code, args.join(' ')).toBe(66);
      expect(r.stderr).toMatch(/not a staging area/);
    }
    expect(snapshot(dir)).toEqual(before);
    const forced = await xstage('recover', '--force', '--json', dir);
    expect(forced.code).toBe(0);
    // `2024` reads as an orphan staging directory of ours (no lock file);
    // `notes.txt` fits no staging layout: reported, never deleted.
    expect(JSON.parse(forced.stdout)).toMatchObject({
      scanned: 1,
      removed: 1,
      skipped: [{ path: join(dir, 'notes.txt'), reason: expect.stringMatching(/layout/) as unknown }],
    });
    expect(readdirSync(dir)).toEqual(['notes.txt']);
  });
});

describe('demo', () => {
  test('passes all its own checks and leaves no temp dir behind', async () => {
    const r = await xstage('demo');
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/^PASS: (\d+)\/\1 checks/m);
    expect(r.stdout).not.toMatch(/^\s+FAIL /m);
    const root = /staging area (\S+)/.exec(r.stdout)?.[1];
    expect(root).toBeDefined();
    expect(existsSync(root!)).toBe(false);
  }, 60_000);
});

describe('run: a `--` after the lock path and the command belongs to the command', () => {
  test.each([[['run', 'L', 'echo', 'a', '--', 'b']], [['run', 'L', '--', 'echo', 'a', '--', 'b']]])(
    '%j prints "a -- b"',
    async (template) => {
      await using d = await tempDir();
      const L = join(d.path, 'L');
      const r = await xstage(...template.map((a) => (a === 'L' ? L : a)));
      expect(r.code, r.stderr).toBe(0);
      expect(r.stdout).toBe('a -- b\n');
    },
  );
});
