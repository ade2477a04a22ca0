/**
 * backend 'flock' against the real flock(2) users (issue 11 item 4):
 * util-linux flock(1) in both directions (`-n` and waiting, command mode
 * and `exec 9>L; flock -n 9`), python3 `fcntl.flock` exclusive and shared,
 * and `xstage run --flock`. Waits are proven by /proc/locks (a blocked
 * waiter), never a sleep. Also: the kernel (OFD) backend does not exclude
 * flock(1), which is why 'flock' exists.
 */
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { isLockError, lock, readOwner, tryLock } from '@x/core';
import { holder, reapAll, start } from './helpers/child.js';
import { track, within } from './helpers/core-util.js';
import { blockedWaiter } from './helpers/interop.js';
import { tempDir } from './helpers/tmp.js';
import { BIN } from './helpers/xstage.js';
import { haveTools } from './helpers/tools.js';

afterEach(reapAll);

const tools = haveTools('flock', 'python3');
const flock = { backend: 'flock' } as const;

/** flock(1) holding `path` (command mode): prints `acquired`, releases at stdin EOF. */
function flockHolder(path: string, ...opts: string[]) {
  return start('flock', [...opts, path, 'sh', '-c', 'echo acquired; cat >/dev/null']);
}

/** The shell idiom of operators' scripts: `exec 9>L; flock -n 9`. */
function fdScript(path: string) {
  return start('sh', ['-c', 'exec 9>"$1"; if flock -n 9; then echo acquired; cat >/dev/null; else echo busy; fi', 'sh', path]);
}

/** python3 fcntl.flock: `acquired`/`busy`, holds until stdin EOF. */
function pyFlock(path: string, shared = false) {
  const op = shared ? 'fcntl.LOCK_SH' : 'fcntl.LOCK_EX';
  const code = [
    'import fcntl, sys',
    "f = open(sys.argv[1], 'a+')",
    'try:',
    `    fcntl.flock(f, ${op} | fcntl.LOCK_NB)`,
    'except OSError:',
    "    print('busy', flush=True); sys.exit(0)",
    "print('acquired', flush=True)",
    'sys.stdin.read()',
  ].join('\n');
  return start('python3', ['-c', code, path]);
}

/** `flock -n L true`: 0 when it got the lock, 1 when it is held. */
const flockN = (path: string): number | null => spawnSync('flock', ['-n', path, 'true']).status;

describe.skipIf(!tools)("backend 'flock' and flock(1) / python fcntl.flock", () => {
  test('flock(1) -n holds: tryLock rejects ELOCKED naming its pid; afterwards we get it', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const h = flockHolder(p, '-n');
    expect(await h.line()).toBe('acquired');
    const err = await tryLock(p, flock).catch((e: unknown) => e);
    expect(isLockError(err, 'ELOCKED')).toBe(true);
    expect((err as { owner?: { pid?: number } }).owner?.pid).toBe(h.proc.pid); // from /proc/locks
    const owner = await readOwner(p);
    expect(owner).toMatchObject({ held: true, shared: false, pid: h.proc.pid });
    expect(owner?.holders).toEqual([{ kind: 'flock', shared: false, pid: h.proc.pid }]);
    expect(await h.finish()).toBe(0);
    await (await tryLock(p, flock)).release();
  });

  test('we hold: flock -n fails, a waiting flock(1) blocks until we release', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const held = await tryLock(p, flock);
    expect(held.backend).toBe('flock');
    expect(flockN(p)).toBe(1);
    const w = flockHolder(p); // waits (no -n)
    await blockedWaiter(p);
    await held.release();
    expect(await w.line()).toBe('acquired');
    expect(await w.finish()).toBe(0);
  });

  test('lock() waits for flock(1) and gets the lock when it exits', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const h = flockHolder(p, '-n');
    expect(await h.line()).toBe('acquired');
    const waiting = lock(p, { ...flock, timeout: 20_000 });
    const state = track(waiting);
    await blockedWaiter(p);
    expect(state.settled).toBe(false);
    await h.finish();
    const held = await within(waiting, 20_000, 'lock()');
    expect((await readOwner(p))?.pid).toBe(process.pid);
    await held.release();
  });

  test('`exec 9>L; flock -n 9` scripts: both directions', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const held = await tryLock(p, flock);
    const busy = fdScript(p);
    expect(await busy.line()).toBe('busy');
    await busy.finish();
    await held.release();
    const s = fdScript(p);
    expect(await s.line()).toBe('acquired');
    // The lock was taken by flock(1), which has exited: the shell holds it
    // through fd 9, and no live pid is known to the kernel.
    const err = await tryLock(p, flock).catch((e: unknown) => e);
    expect(isLockError(err, 'ELOCKED')).toBe(true);
    expect((err as { owner?: { pid?: number } }).owner?.pid).toBeUndefined();
    await s.finish();
    await (await tryLock(p, flock)).release();
  });

  test('python fcntl.flock: exclusive both ways; shared holders share with our shared lock, exclude our exclusive', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const ex = pyFlock(p);
    expect(await ex.line()).toBe('acquired');
    await expect(tryLock(p, flock)).rejects.toMatchObject({ code: 'ELOCKED' });
    await expect(tryLock(p, { ...flock, shared: true })).rejects.toMatchObject({ code: 'ELOCKED' });
    await ex.finish();

    const held = await tryLock(p, flock);
    const busy = pyFlock(p);
    expect(await busy.line()).toBe('busy');
    await busy.finish();
    await held.release();

    const sh = pyFlock(p, true);
    expect(await sh.line()).toBe('acquired');
    const ours = await tryLock(p, { ...flock, shared: true });
    expect(await readOwner(p)).toMatchObject({ held: true, shared: true });
    await ours.release();
    // Our old record names us, but only python holds it now: the kernel names python.
    await expect(tryLock(p, flock)).rejects.toMatchObject({ code: 'ELOCKED', owner: { pid: sh.proc.pid } });
    await sh.finish();
  });

  test('xstage run --flock excludes flock(1), and flock(1) excludes it (75)', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    const run = start(process.execPath, [BIN, 'run', '--flock', p, '--', 'sh', '-c', 'echo running; cat >/dev/null']);
    expect(await run.line()).toBe('running');
    expect(flockN(p)).toBe(1);
    expect(await run.finish()).toBe(0);
    const h = flockHolder(p, '-n');
    expect(await h.line()).toBe('acquired');
    const r = spawnSync(process.execPath, [BIN, 'run', '--flock', p, '--', 'true'], { encoding: 'utf8' });
    expect(r.status).toBe(75);
    expect(r.stderr).toContain(`pid ${h.proc.pid}`);
    await h.finish();
  });

  test('why a separate backend: the kernel (OFD) backend and flock(1) do not see each other on Linux', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    writeFileSync(p, '');
    await using _held = await tryLock(p, { backend: 'kernel' });
    expect(flockN(p)).toBe(0);
  });
});

describe("backend 'flock' and backend 'kernel' on one path", () => {
  test('exclude each other both ways, across processes: two backends never make two holders', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'job.lock');
    for (const [theirs, ours] of [
      ['kernel', 'flock'],
      ['flock', 'kernel'],
    ] as const) {
      const { child, first } = await holder('tryLock', p, { backend: theirs });
      expect(first).toMatch(/^acquired /);
      await expect(tryLock(p, { backend: ours }), `${theirs} held, ${ours} tried`).rejects.toMatchObject({
        code: 'ELOCKED',
        owner: { pid: child.proc.pid },
      });
      await expect(tryLock(p, { backend: ours, shared: true })).rejects.toMatchObject({ code: 'ELOCKED' });
      const waiting = lock(p, { backend: ours, timeout: 20_000 });
      await blockedWaiter(p);
      await child.finish();
      await (await within(waiting, 20_000, `${ours} lock() after the ${theirs} holder`)).release();
    }
  });
});
