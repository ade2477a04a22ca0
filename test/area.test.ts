/**
 * Staging areas (docs/contract.md 4.2), containers/storage `internal/tempdir` behaviours:
 * an entry is a lock file `lock-<id>` plus a staging directory `<id>` that
 * exists only while the lock is held; `stage` keeps basenames after a
 * counter prefix; `commit` renames the directory into place (never over an
 * existing `dest`) and kills the handle; `cleanup` removes both, idempotent;
 * `list` reports held/free/missing without changing anything; `recover`
 * reclaims exactly the entries whose writer is gone, and never one that is
 * held by another process, by this process, or by a classic POSIX `fcntl`
 * holder (Python `lockf`, as podman takes them); bad arguments reject with a
 * `TypeError` naming the argument, and change nothing.
 *
 * Stale entries are made the real way: a child process
 * (test/fixtures/area-worker.mjs) creates the entry and exits without cleanup
 * or is SIGKILLed.
 */
import {
  isLockError,
  LockError,
  StagingArea,
  tryLockPath,
  type RecoverProgress,
  type StagingDir,
  type StagingEntry,
} from '@x/staging';
import {
  existsSync,
  lstatSync,
  mkdirSync,
  readdirSync,
  readFileSync,
  realpathSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import { join, relative } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { rootNames, staleEntry, snapshot, worker } from './helpers/area.js';
import { holder, pyLockf, reapAll } from './helpers/child.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

/** The rejection of `fn()`; fails if it throws synchronously or resolves. */
async function rejection(fn: () => Promise<unknown>): Promise<unknown> {
  let p: Promise<unknown>;
  try {
    p = fn();
  } catch (err) {
    throw new Error(`threw synchronously instead of rejecting: ${String(err)}`);
  }
  return p.then(
    (v) => {
      throw new Error(`resolved (${String(v)}) instead of rejecting`);
    },
    (err: unknown) => err,
  );
}

/** A child process's view: `error ELOCKED` when the lock is held (by us). */
async function childSeesHeld(lockPath: string): Promise<boolean> {
  const { child, first } = await holder('tryLockPath', lockPath);
  await child.finish();
  return first === 'error ELOCKED';
}

function entries(root: string): string[] {
  return rootNames(root);
}

async function collect(area: StagingArea): Promise<StagingEntry[]> {
  const out: StagingEntry[] = [];
  for await (const e of area.list()) out.push(e);
  return out.sort((a, b) => a.id.localeCompare(b.id));
}

describe('create, stage, cleanup, commit', () => {
  test('create: lock-<id> and <id>/ appear together, the lock held (a child sees ELOCKED), the dir 0o700', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    expect(area.root).toBe(join(d.path, 'root'));
    expect(lstatSync(area.root).mode & 0o777).toBe(0o700);
    const dir = await area.create();
    expect(dir.path).toBe(join(area.root, dir.id));
    expect(dir.lockPath).toBe(join(area.root, `lock-${dir.id}`));
    expect(dir.id).toMatch(/^[0-9a-z]+$/);
    expect(entries(area.root)).toEqual([dir.id, `lock-${dir.id}`].sort());
    expect(lstatSync(dir.path).isDirectory()).toBe(true);
    expect(lstatSync(dir.path).mode & 0o777).toBe(0o700);
    expect(await childSeesHeld(dir.lockPath)).toBe(true);
    // This process holds it too: a second acquisition fails fast.
    expect(isLockError(await rejection(() => tryLockPath(dir.lockPath)), 'ELOCKED')).toBe(true);
    await dir.cleanup();
  });

  test('stage: files and directories keep their basename after a counter prefix (0-name, 1-name, ...), per entry', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    const src = join(d.path, 'src');
    mkdirSync(join(src, 'sub', 'tree'), { recursive: true });
    writeFileSync(join(src, 'layer.tar'), 'layer bytes');
    writeFileSync(join(src, 'config.json'), '{"a":1}');
    writeFileSync(join(src, 'sub', 'tree', 'leaf'), 'leaf');
    mkdirSync(join(src, 'again'));
    writeFileSync(join(src, 'again', 'layer.tar'), 'second layer.tar');

    const dir = await area.create();
    expect(await dir.stage(join(src, 'layer.tar'))).toBe(join(dir.path, '0-layer.tar'));
    expect(await dir.stage(join(src, 'config.json'))).toBe(join(dir.path, '1-config.json'));
    expect(await dir.stage(join(src, 'sub'))).toBe(join(dir.path, '2-sub'));
    // Same basename again: no collision, the counter keeps them apart.
    expect(await dir.stage(join(src, 'again', 'layer.tar'))).toBe(join(dir.path, '3-layer.tar'));
    // A relative path works too (resolved against the cwd).
    writeFileSync(join(src, 'rel'), 'rel');
    expect(await dir.stage(relative(process.cwd(), join(src, 'rel')))).toBe(join(dir.path, '4-rel'));

    expect(readdirSync(dir.path).sort()).toEqual(['0-layer.tar', '1-config.json', '2-sub', '3-layer.tar', '4-rel']);
    expect(readFileSync(join(dir.path, '0-layer.tar'), 'utf8')).toBe('layer bytes');
    expect(readFileSync(join(dir.path, '1-config.json'), 'utf8')).toBe('{"a":1}');
    expect(readFileSync(join(dir.path, '2-sub', 'tree', 'leaf'), 'utf8')).toBe('leaf');
    expect(readFileSync(join(dir.path, '3-layer.tar'), 'utf8')).toBe('second layer.tar');
    // Moved (rename), not copied.
    expect(readdirSync(src).sort()).toEqual(['again']);
    expect(readdirSync(join(src, 'again'))).toEqual([]);

    // The counter is per entry: a second entry starts at 0.
    const other = await area.create();
    writeFileSync(join(src, 'x'), 'x');
    expect(await other.stage(join(src, 'x'))).toBe(join(other.path, '0-x'));

    // A missing source rejects with its OS error and stages nothing.
    const err = await rejection(() => dir.stage(join(src, 'nope')));
    expect((err as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(readdirSync(dir.path)).toHaveLength(5);
    await dir.cleanup();
    await other.cleanup();
    expect(entries(area.root)).toEqual([]);
  });

  test('stage of many files concurrently: every one lands under a distinct counter', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    const src = join(d.path, 'src');
    mkdirSync(src);
    const names = Array.from({ length: 40 }, (_, i) => `f${i}.bin`);
    for (const n of names) writeFileSync(join(src, n), n);
    await using dir = await area.create();
    const staged = await Promise.all(names.map((n) => dir.stage(join(src, n))));
    const prefixes = staged.map((p) => Number(p.slice(dir.path.length + 1).split('-')[0])).sort((a, b) => a - b);
    expect(prefixes).toEqual(names.map((_, i) => i));
    for (const [i, p] of staged.entries()) {
      expect(p.endsWith(`-${names[i]}`)).toBe(true);
      expect(readFileSync(p, 'utf8')).toBe(names[i]);
    }
    expect(readdirSync(src)).toEqual([]);
  });

  test('cleanup removes the directory (contents included) and the lock file; it is idempotent', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    const dir = await area.create();
    mkdirSync(join(dir.path, 'a', 'b'), { recursive: true });
    writeFileSync(join(dir.path, 'a', 'b', 'c'), 'c');
    writeFileSync(join(dir.path, 'top'), 'top');
    await dir.cleanup();
    expect(existsSync(dir.path)).toBe(false);
    expect(existsSync(dir.lockPath)).toBe(false);
    expect(entries(area.root)).toEqual([]);
    await dir.cleanup();
    await dir[Symbol.asyncDispose]();
    // Concurrent cleanups of a fresh entry settle once.
    const two = await area.create();
    await Promise.all([two.cleanup(), two.cleanup(), two[Symbol.asyncDispose]()]);
    expect(entries(area.root)).toEqual([]);
  });

  test('await using cleans up at scope end', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    let seen: string[] = [];
    {
      await using dir = await area.create();
      writeFileSync(join(dir.path, 'f'), 'f');
      seen = entries(area.root);
    }
    expect(seen).toHaveLength(2);
    expect(entries(area.root)).toEqual([]);
  });

  test('after cleanup or commit the handle is dead: stage and commit reject LockError ERELEASED; cleanup resolves', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    const src = join(d.path, 'src');
    mkdirSync(src);
    writeFileSync(join(src, 'f'), 'f');

    const cleaned = await area.create();
    await cleaned.cleanup();
    const e1 = await rejection(() => cleaned.stage(join(src, 'f')));
    expect(e1).toBeInstanceOf(LockError);
    expect(isLockError(e1, 'ERELEASED')).toBe(true);
    const e2 = await rejection(() => cleaned.commit(join(d.path, 'out1')));
    expect(isLockError(e2, 'ERELEASED')).toBe(true);
    expect(existsSync(join(d.path, 'out1'))).toBe(false);

    const committed = await area.create();
    await committed.commit(join(d.path, 'out2'));
    const e3 = await rejection(() => committed.stage(join(src, 'f')));
    expect(e3).toBeInstanceOf(LockError);
    expect(isLockError(e3, 'ERELEASED')).toBe(true);
    const e4 = await rejection(() => committed.commit(join(d.path, 'out3')));
    expect(isLockError(e4, 'ERELEASED')).toBe(true);
    expect(existsSync(join(d.path, 'out3'))).toBe(false);
    await committed.cleanup(); // no-op after a commit
    expect(existsSync(join(d.path, 'out2'))).toBe(true); // cleanup did not touch the committed dir

    expect(readdirSync(src)).toEqual(['f']); // nothing was staged
    expect(entries(area.root)).toEqual([]);
  });

  test('commit renames the staging directory into place: dest has the contents, the entry and its lock file are gone', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    const src = join(d.path, 'layer.tar');
    writeFileSync(src, 'layer');
    const dir = await area.create();
    const ino = lstatSync(dir.path).ino;
    writeFileSync(join(dir.path, 'manifest'), 'manifest');
    mkdirSync(join(dir.path, 'blobs'));
    writeFileSync(join(dir.path, 'blobs', 'b1'), 'b1');
    await dir.stage(src);
    const dest = join(d.path, 'store', 'layers', 'sha256-9f2c');
    mkdirSync(join(d.path, 'store', 'layers'), { recursive: true });
    await dir.commit(dest);
    expect(lstatSync(dest).ino).toBe(ino); // renamed, not copied
    expect(readdirSync(dest).sort()).toEqual(['0-layer.tar', 'blobs', 'manifest']);
    expect(readFileSync(join(dest, 'manifest'), 'utf8')).toBe('manifest');
    expect(readFileSync(join(dest, 'blobs', 'b1'), 'utf8')).toBe('b1');
    expect(readFileSync(join(dest, '0-layer.tar'), 'utf8')).toBe('layer');
    expect(existsSync(dir.path)).toBe(false);
    expect(existsSync(dir.lockPath)).toBe(false);
    expect(entries(area.root)).toEqual([]);
    // A relative dest and syncContents: false work too.
    const two = await area.create();
    writeFileSync(join(two.path, 'f'), 'two');
    const rel = relative(process.cwd(), join(d.path, 'store', 'two'));
    await two.commit(rel, { syncContents: false });
    expect(readFileSync(join(d.path, 'store', 'two', 'f'), 'utf8')).toBe('two');
    expect(entries(area.root)).toEqual([]);
  });

  test.each([
    ['a file', (p: string) => writeFileSync(p, 'existing file')],
    ['a non-empty directory', (p: string) => (mkdirSync(p), writeFileSync(join(p, 'keep'), 'keep'))],
    ['an empty directory', (p: string) => void mkdirSync(p)],
    ['a symlink', (p: string) => symlinkSync('/nonexistent-target', p)],
  ])('commit onto %s rejects EEXIST and moves nothing; the entry stays held and usable', async (_what, make) => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    const dir = await area.create();
    writeFileSync(join(dir.path, 'payload'), 'payload');
    const dest = join(d.path, 'dest');
    make(dest);
    const before = snapshot(d.path);
    const err = await rejection(() => dir.commit(dest));
    expect((err as NodeJS.ErrnoException).code).toBe('EEXIST');
    expect((err as NodeJS.ErrnoException).path).toBe(dest);
    expect(isLockError(err)).toBe(false);
    expect(snapshot(d.path)).toEqual(before); // nothing moved, nothing replaced
    expect(await childSeesHeld(dir.lockPath)).toBe(true); // still held
    // Still usable: stage more, then commit elsewhere.
    const src = join(d.path, 'late');
    writeFileSync(src, 'late');
    expect(await dir.stage(src)).toBe(join(dir.path, '0-late'));
    await dir.commit(join(d.path, 'dest2'));
    expect(readdirSync(join(d.path, 'dest2')).sort()).toEqual(['0-late', 'payload']);
    expect(entries(area.root)).toEqual([]);
  });

  test('two areas opened on one root (and a child process) get distinct entries', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const a = await StagingArea.open(root);
    const b = await StagingArea.open(`${root}/./`);
    expect(b.root).toBe(a.root);
    const { child, entry } = await worker(root, 'cleanup');
    const dirs: StagingDir[] = await Promise.all(Array.from({ length: 60 }, (_, i) => (i % 2 ? a : b).create()));
    const ids = new Set([...dirs.map((x) => x.id), entry.id]);
    expect(ids.size).toBe(61);
    expect(new Set(dirs.map((x) => x.path)).size).toBe(60);
    expect(new Set(dirs.map((x) => x.lockPath)).size).toBe(60);
    for (const x of dirs) {
      expect(lstatSync(x.path).isDirectory()).toBe(true);
      expect(lstatSync(x.lockPath).isFile()).toBe(true);
    }
    expect(entries(root)).toHaveLength(2 * 61);
    await Promise.all(dirs.map((x) => x.cleanup()));
    expect(await child.finish()).toBe(0);
    expect(entries(root)).toEqual([]);
  });
});

describe('list', () => {
  test('shows held (this process, another process), free (writer gone) and missing (no lock file) entries, and changes nothing', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    const ours = await area.create();
    const { child, entry: theirs } = await worker(root, 'cleanup');
    const stale = await staleEntry(root, 'exit');
    const killed = await staleEntry(root, 'SIGKILL');
    // A free lock file whose directory is already gone.
    const lockOnly = await staleEntry(root, 'exit');
    rmSync(lockOnly.path, { recursive: true });
    // A directory without its lock file.
    mkdirSync(join(root, 'orphan'));
    writeFileSync(join(root, 'orphan', 'f'), 'f');
    // Names that are not entries.
    writeFileSync(join(root, '.hidden'), '');
    writeFileSync(join(root, 'lock-'), '');

    const before = snapshot(root);
    const listed = await collect(area);
    expect(snapshot(root)).toEqual(before);

    const expected = [
      { id: ours.id, hasDir: true, state: 'held', pid: process.pid },
      { id: theirs.id, hasDir: true, state: 'held', pid: theirs.pid },
      { id: stale.id, hasDir: true, state: 'free', pid: stale.pid },
      { id: killed.id, hasDir: true, state: 'free', pid: killed.pid },
      { id: lockOnly.id, hasDir: false, state: 'free', pid: lockOnly.pid },
      { id: 'orphan', hasDir: true, state: 'missing', pid: undefined },
    ].sort((x, y) => x.id.localeCompare(y.id));
    expect(listed.map((e) => ({ id: e.id, hasDir: e.hasDir, state: e.state, pid: e.owner?.pid }))).toEqual(expected);
    for (const e of listed) {
      expect(e.path).toBe(join(root, e.id));
      expect(e.lockPath).toBe(join(root, `lock-${e.id}`));
      expect(e.error).toBeUndefined();
    }
    expect(listed.find((e) => e.id === 'orphan')!.owner).toBeNull();
    expect(listed.find((e) => e.id === theirs.id)!.owner?.backend).toBe('kernel');

    expect(await child.finish()).toBe(0);
    await ours.cleanup();
  });

  test('an aborted signal rejects the listing with its reason', async () => {
    await using d = await tempDir();
    const area = await StagingArea.open(join(d.path, 'root'));
    const reason = new Error('stop');
    const err = await rejection(() => collect2(area.list({ signal: AbortSignal.abort(reason) })));
    expect(err).toBe(reason);
  });
});

async function collect2(it: AsyncIterable<unknown>): Promise<number> {
  let n = 0;
  for await (const _ of it) n++;
  return n;
}

describe('recover', () => {
  test('reclaims entries whose writer exited without cleanup or was SIGKILLed, orphan dirs and free lock files; reports counts and progress', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    const exited = await staleEntry(root, 'exit', 100);
    const killed = await staleEntry(root, 'SIGKILL', 200);
    mkdirSync(join(exited.path, 'nested', 'deeper'), { recursive: true });
    writeFileSync(join(exited.path, 'nested', 'deeper', 'f'), '12345');
    mkdirSync(join(root, 'orphan', 'x'), { recursive: true });
    writeFileSync(join(root, 'orphan', 'x', 'g'), 'abc');
    writeFileSync(join(root, 'lock-lonely'), '');
    writeFileSync(join(root, '.xlock-stray.tmp'), ''); // a free in-flight lock file: deleted, not counted
    writeFileSync(join(root, '.keep'), 'not an entry'); // ignored
    writeFileSync(join(root, 'lock-'), ''); // ignored: empty id

    const progress: RecoverProgress[] = [];
    const report = await area.recover({ onProgress: (p) => progress.push({ ...p }) });
    expect(report).toEqual({
      scanned: 4,
      removed: 4,
      live: 0,
      bytesFreed: 100 + 5 + 200 + 3,
      errors: [],
      errorsOmitted: 0,
      skipped: [{ path: join(root, 'lock-'), reason: expect.stringMatching(/layout/) as unknown }],
      skippedOmitted: 0,
    });
    expect(entries(root)).toEqual(['.keep', 'lock-']);
    expect(progress.map((p) => p.scanned)).toEqual([1, 2, 3, 4]);
    expect(progress.at(-1)).toEqual({ scanned: 4, removed: 4, live: 0, bytesFreed: 308, errors: 0 });
    for (const [i, p] of progress.entries()) {
      expect(p.scanned).toBe(p.removed + p.live + p.errors);
      if (i > 0) expect(p.bytesFreed).toBeGreaterThanOrEqual(progress[i - 1]!.bytesFreed);
    }
    expect(killed.id).not.toBe(exited.id);
    // Nothing left to do.
    expect(await area.recover()).toMatchObject({ scanned: 0, removed: 0, live: 0, bytesFreed: 0, errors: [] });
  });

  test('an entry held by another process and one held by this process survive recover (dry run or not); the stale one goes', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    const { child, entry: theirs } = await worker(root, 'cleanup', 50);
    const ours = await area.create();
    writeFileSync(join(ours.path, 'mine'), 'mine');
    const stale = await staleEntry(root, 'SIGKILL', 70);

    const before = snapshot(root);
    // A dry run reports what the sweep then does.
    const expected = {
      scanned: 3,
      removed: 1,
      live: 2,
      bytesFreed: 70,
      errors: [],
      errorsOmitted: 0,
      skipped: [],
      skippedOmitted: 0,
    };
    const dry = await area.recover({ dryRun: true });
    expect(dry).toEqual(expected);
    expect(snapshot(root)).toEqual(before); // a dry run changes nothing

    const liveBefore = snapshot(theirs.path);
    const oursBefore = snapshot(ours.path);
    const report = await area.recover();
    expect(report).toEqual(expected);
    expect(existsSync(stale.path) || existsSync(stale.lockPath)).toBe(false);
    expect(snapshot(theirs.path)).toEqual(liveBefore);
    expect(snapshot(ours.path)).toEqual(oursBefore);
    expect(entries(root)).toEqual([theirs.id, ours.id, `lock-${theirs.id}`, `lock-${ours.id}`].sort());
    // Both still hold their locks.
    expect(await childSeesHeld(theirs.lockPath)).toBe(true);
    expect(await childSeesHeld(ours.lockPath)).toBe(true);
    // And both finish normally.
    expect(await child.finish()).toBe(0);
    await ours.commit(join(d.path, 'out'));
    expect(readFileSync(join(d.path, 'out', 'mine'), 'utf8')).toBe('mine');
    expect(entries(root)).toEqual([]);
  });

  test('an entry whose lock file is held by python fcntl.lockf (a classic POSIX holder) survives recover', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    const id = 'pyheld0001';
    mkdirSync(join(root, id));
    writeFileSync(join(root, id, 'data'), 'python writer');
    const py = await pyLockf(join(root, `lock-${id}`));
    expect(py.first).toBe('acquired');
    const stale = await staleEntry(root, 'exit');

    const before = snapshot(join(root, id));
    const report = await area.recover();
    expect(report).toEqual({
      scanned: 2,
      removed: 1,
      live: 1,
      bytesFreed: 16,
      errors: [],
      errorsOmitted: 0,
      skipped: [],
      skippedOmitted: 0,
    });
    expect(snapshot(join(root, id))).toEqual(before);
    expect(existsSync(join(root, `lock-${id}`))).toBe(true);
    expect(existsSync(stale.path)).toBe(false);
    const listed = await collect(area);
    expect(listed.map((e) => [e.id, e.state])).toEqual([[id, 'held']]);
    expect(listed[0]!.owner?.pid).toBe(py.child.proc.pid);
    expect(entries(root)).toEqual([id, `lock-${id}`].sort());

    // Once python lets go, the entry is stale and goes.
    py.child.proc.stdin!.end();
    expect(await py.child.line()).toBe('released');
    expect(await py.child.finish()).toBe(0);
    expect(await area.recover()).toEqual({
      scanned: 1,
      removed: 1,
      live: 0,
      bytesFreed: 'python writer'.length,
      errors: [],
      errorsOmitted: 0,
      skipped: [],
      skippedOmitted: 0,
    });
    expect(entries(root)).toEqual([]);
  });

  test('an aborted signal rejects with its reason and deletes nothing', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    await staleEntry(root, 'exit');
    const before = snapshot(root);
    const reason = new Error('stop');
    expect(await rejection(() => area.recover({ signal: AbortSignal.abort(reason) }))).toBe(reason);
    expect(snapshot(root)).toEqual(before);
  });
});

describe('bad arguments reject with a TypeError naming the argument, and create or change nothing', () => {
  test('StagingArea.open', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => StagingArea.open(123 as unknown as string), /`root`/],
      [() => StagingArea.open(''), /`root`/],
      [() => StagingArea.open(undefined as unknown as string), /`root`/],
      [() => StagingArea.open(`${root}\0x`), /`root`/],
      [() => StagingArea.open(root, { bogus: true } as object), /`bogus`/],
      [() => StagingArea.open(root, { create: 'yes' } as unknown as object), /`create`/],
      [() => StagingArea.open(root, { mode: -1 }), /`mode`/],
      [() => StagingArea.open(root, { mode: 0o70000 }), /`mode`/],
      [() => StagingArea.open(root, 'opts' as unknown as object), /`options`/],
      [() => StagingArea.open(root, null as unknown as object), /`options`/],
    ];
    for (const [fn, name] of cases) {
      const err = await rejection(fn);
      expect(err, String(fn)).toBeInstanceOf(TypeError);
      expect((err as Error).message).toMatch(name);
    }
    expect(readdirSync(d.path)).toEqual([]); // no root was created
  });

  test('open: a missing root with create: false is ENOENT and creates nothing', async () => {
    await using d = await tempDir();
    const err = await rejection(() => StagingArea.open(join(d.path, 'missing'), { create: false }));
    expect((err as NodeJS.ErrnoException).code).toBe('ENOENT');
    expect(readdirSync(d.path)).toEqual([]);
  });

  // The TSDoc of open(): "@throws ... `ENOTDIR` when it is not a directory".
  test.each([false, true])('open: a root that is a regular file is ENOTDIR (create: %s)', async (create) => {
    await using d = await tempDir();
    writeFileSync(join(d.path, 'file'), 'x');
    const err = await rejection(() => StagingArea.open(join(d.path, 'file'), { create }));
    expect((err as NodeJS.ErrnoException).code).toBe('ENOTDIR');
    expect(readFileSync(join(d.path, 'file'), 'utf8')).toBe('x');
  });

  test('recover and list options', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    await staleEntry(root, 'exit');
    const before = snapshot(root);
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => area.recover({ dryRun: 'yes' } as unknown as object), /`dryRun`/],
      [() => area.recover({ dryrun: true } as object), /`dryrun`/],
      [() => area.recover({ onProgress: 1 } as unknown as object), /`onProgress`/],
      [() => area.recover({ signal: {} } as unknown as object), /`signal`/],
      [() => area.recover(true as unknown as object), /`options`/],
      [() => area.recover([] as unknown as object), /`options`/],
      [() => collect2(area.list({ bogus: 1 } as object)), /`bogus`/],
      [() => collect2(area.list({ signal: 'x' } as unknown as object)), /`signal`/],
    ];
    for (const [fn, name] of cases) {
      const err = await rejection(fn);
      expect(err, String(fn)).toBeInstanceOf(TypeError);
      expect((err as Error).message).toMatch(name);
    }
    expect(snapshot(root)).toEqual(before); // the stale entry is still there
  });

  test('stage and commit arguments', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    const dir = await area.create();
    writeFileSync(join(dir.path, 'payload'), 'payload');
    const before = snapshot(d.path);
    const cases: [() => Promise<unknown>, RegExp][] = [
      [() => dir.stage(42 as unknown as string), /`path`/],
      [() => dir.stage(''), /`path`/],
      [() => dir.stage('/'), /`path`/],
      [() => dir.stage(`${d.path}/..`), /`path`/],
      [() => dir.commit(join(root, 'inside')), /`dest`/], // directly in the root: the sweep would take it for an entry
      [() => dir.commit(root), /`dest`/],
      [() => dir.commit(42 as unknown as string), /`dest`/],
      [() => dir.commit(''), /`dest`/],
      [() => dir.commit(join(d.path, 'out'), { bogus: 1 } as object), /`bogus`/],
      [() => dir.commit(join(d.path, 'out'), { syncContents: 'no' } as unknown as object), /`syncContents`/],
      [() => dir.commit(join(d.path, 'out'), 3 as unknown as object), /`options`/],
    ];
    for (const [fn, name] of cases) {
      const err = await rejection(fn);
      expect(err, String(fn)).toBeInstanceOf(TypeError);
      expect((err as Error).message).toMatch(name);
    }
    expect(snapshot(d.path)).toEqual(before); // nothing moved, nothing created
    // The entry is intact and usable.
    await dir.commit(join(d.path, 'out'));
    expect(readFileSync(join(d.path, 'out', 'payload'), 'utf8')).toBe('payload');
    expect(entries(root)).toEqual([]);
  });

  // The root under another name is the root (area.ts refuses it by dev/ino
  // after the lexical check): a dest directly in it would be taken by the
  // next sweep for an orphan entry and deleted.
  test('commit refuses a dest whose parent directory is a symlink to the root, and moves nothing', async () => {
    await using d = await tempDir();
    const root = join(d.path, 'root');
    const area = await StagingArea.open(root);
    const dir = await area.create();
    writeFileSync(join(dir.path, 'payload'), 'committed data');
    symlinkSync(root, join(d.path, 'root-alias'));
    const before = snapshot(d.path);
    const err = await dir.commit(join(d.path, 'root-alias', 'inside')).then(
      () => undefined,
      (e: unknown) => e,
    );
    const after = snapshot(d.path);
    // Show what a sweep then does to the "committed" directory.
    const report = await area.recover();
    expect(err).toBeInstanceOf(TypeError);
    expect((err as Error).message).toMatch(/`dest`/);
    expect(after).toEqual(before);
    expect(report.removed).toBe(0);
    await dir.cleanup();
  });
});

describe('the root and its marker', () => {
  test('a root that is a symlink to a directory opens as that directory (root is the real path)', async () => {
    await using d = await tempDir();
    const real = join(d.path, 'real');
    mkdirSync(real);
    symlinkSync(real, join(d.path, 'link'));
    const area = await StagingArea.open(join(d.path, 'link'));
    expect(area.root).toBe(realpathSync(real));
    const dir = await area.create();
    expect(dir.path.startsWith(`${area.root}/`)).toBe(true);
    await dir.cleanup();
    expect(rootNames(real)).toEqual([]);
  });

  test('the marker goes into a created or empty root, never into a populated directory, never through a symlink', async () => {
    await using d = await tempDir();
    const made = await StagingArea.open(join(d.path, 'new'));
    expect(existsSync(join(made.root, '.xstage-area'))).toBe(true);
    const populated = join(d.path, 'photos');
    mkdirSync(populated);
    writeFileSync(join(populated, 'a.jpg'), 'jpeg');
    await StagingArea.open(populated);
    expect(readdirSync(populated)).toEqual(['a.jpg']);
    const planted = join(d.path, 'planted');
    mkdirSync(planted);
    symlinkSync(join(d.path, 'target'), join(planted, '.xstage-area'));
    await StagingArea.open(planted);
    expect(existsSync(join(d.path, 'target'))).toBe(false);
  });
});
