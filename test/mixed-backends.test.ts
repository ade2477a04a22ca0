/**
 * Never a silent switch of lock kind, and never two holders of one path
 * whatever each process chose (docs/installing.md, "Mixing backends"). A
 * process "without the addon" is a real child started with XLOCK_ADDON
 * naming a file that does not exist.
 */
import { lock, tryLock } from '@x/core';
import { spawnSync } from 'node:child_process';
import { cpSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { join } from 'node:path';
import { afterEach, describe, expect, test } from 'vitest';
import { holder, reapAll } from './helpers/child.js';
import { lockErrorOf, track, within } from './helpers/core-util.js';
import { tempDir } from './helpers/tmp.js';
import { haveTools } from './helpers/tools.js';

const noAddon = { XLOCK_ADDON: '/nonexistent/xlock.node' };
const kernel = { backend: 'kernel' } as const;

/** Leaves at `p` the lease file of a holder (a process without the addon) that was SIGKILLed. */
async function deadLease(p: string): Promise<void> {
  const h = await holder('tryLock', p, { backend: 'lease' }, noAddon);
  expect(h.first).toMatch(/^acquired/);
  h.child.proc.kill('SIGKILL');
  await h.child.reap();
}

afterEach(reapAll);

/** Runs a snippet in a child without the addon; resolves its stdout. */
function withoutAddon(code: string): string {
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', code], {
    env: { ...process.env, ...noAddon },
    encoding: 'utf8',
  });
  if (r.status !== 0) throw new Error(`child failed (${r.status}): ${r.stderr}`);
  return r.stdout.trim();
}

describe('without the addon', () => {
  test("'auto' on a local filesystem rejects ENOTSUP with the reason, and creates nothing", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const out = JSON.parse(
      withoutAddon(`
        import { tryLock, kernelLocks } from '@x/core';
        const r = await tryLock(${JSON.stringify(p)}).then((h) => ({ backend: h.backend }), (e) => ({ code: e.code, message: e.message }));
        console.log(JSON.stringify({ ...r, available: kernelLocks.available, reason: kernelLocks.reason }));`),
    ) as { code?: string; message: string; available: boolean; reason: string; backend?: string };
    expect(out.backend).toBeUndefined();
    expect(out.code).toBe('ENOTSUP');
    expect(out.available).toBe(false);
    expect(out.reason).toMatch(/^XLOCK_ADDON=\/nonexistent\/xlock\.node did not load/);
    expect(out.message).toContain(out.reason);
    expect(() => readFileSync(p)).toThrow(/ENOENT/);
  });

  test('an override that does not load is reported and says how to go back', () => {
    const out = withoutAddon(`import { kernelLocks } from '@x/core'; console.log(kernelLocks.reason);`);
    expect(out).toMatch(/did not load .*; unset it to use @x\/core's own addon\.$/);
  });

  test('with no prebuild for the platform and no build, the reason names the build command and XLOCK_ADDON', async () => {
    await using d = await tempDir();
    const pkg = join(d.path, 'node_modules', '@x', 'core');
    mkdirSync(pkg, { recursive: true });
    cpSync(fileURLToPath(new URL('../packages/core/dist', import.meta.url)), join(pkg, 'dist'), { recursive: true });
    cpSync(fileURLToPath(new URL('../packages/core/package.json', import.meta.url)), join(pkg, 'package.json'));
    const r = spawnSync(
      process.execPath,
      ['--input-type=module', '-e', `import { kernelLocks } from '@x/core'; console.log(kernelLocks.reason);`],
      {
        cwd: d.path,
        env: { ...process.env, XLOCK_ADDON: '' },
        encoding: 'utf8',
      },
    );
    expect(r.status, r.stderr).toBe(0);
    expect(r.stdout).toContain(`@x/core has no kernel-lock addon that loads on ${process.platform}-${process.arch}`);
    expect(r.stdout).toContain(
      `build one from its C source with \`node ${pkg}/scripts/build-native.mjs\` (needs a C compiler), or set XLOCK_ADDON`,
    );
  });
});

describe('a lease holder without the addon and a kernel acquirer', () => {
  test('the kernel acquirer treats the live lease as held: ELOCKED, then lock() gets it once the lease is released', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const h = await holder('tryLock', p, { backend: 'lease' }, noAddon);
    expect(h.first).toMatch(/^acquired .*"backend":"lease"/);
    const err = await lockErrorOf(tryLock(p, kernel));
    expect(err.code).toBe('ELOCKED');
    expect(err.owner?.pid).toBe(h.child.proc.pid);
    expect((await lockErrorOf(tryLock(p, { backend: 'kernel', shared: true }))).code).toBe('ELOCKED');
    const waiting = lock(p, { backend: 'kernel', pollInterval: 5, timeout: 60_000 });
    const state = track(waiting);
    // Still excluded after a round trip to the holder.
    expect((await lockErrorOf(tryLock(p, kernel))).code).toBe('ELOCKED');
    expect(state.settled).toBe(false);
    expect(await h.child.finish()).toBe(0);
    const held = await within(waiting, 30_000, 'lock() after the lease was released');
    expect(held.backend).toBe('kernel');
    await held.release();
  });

  test("a SIGKILLed lease holder's file is taken by a kernel acquirer at once (its death is proven)", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    await deadLease(p);
    const held = await tryLock(p, kernel);
    expect(JSON.parse(readFileSync(p, 'utf8').split('\n')[0]!)).toMatchObject({ backend: 'kernel', pid: process.pid });
    await held.release();
  });
});

describe('a dead lease taken by a kernel acquirer, then a lease acquirer without the addon', () => {
  test('a shared kernel lock on a dead lease (no record written): the lease acquirer rejects ENOTSUP, never a second holder', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    await deadLease(p);
    const shared = await tryLock(p, { backend: 'kernel', shared: true });
    // The file still holds the dead lease's record: only the kernel knows it is held.
    expect(readFileSync(p, 'utf8')).toContain('"backend":"lease"');
    const t = await holder('tryLock', p, { backend: 'lease' }, noAddon);
    expect(t.first).toBe('error ENOTSUP');
    await shared.release();
  });

  test('a legacy pid file held by a kernel lock: a lease acquirer judging it stale rejects ENOTSUP, it does not take it over', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'installer.lock');
    writeFileSync(p, '2147483646\n'); // nftban-style pid text (no such process)
    const held = await tryLock(p, kernel);
    expect(readFileSync(p, 'utf8')).toBe('2147483646\n'); // not our file to write
    const t = await holder('lock', p, { backend: 'lease', staleAfter: 50, pollInterval: 10, timeout: 20_000 }, noAddon);
    expect(t.first).toBe('error ENOTSUP');
    expect(readFileSync(p, 'utf8')).toBe('2147483646\n');
    await held.release();
  });
});

describe('a kernel lock file and a lease acquirer without the addon', () => {
  test('a held kernel lock: the lease acquirer rejects ENOTSUP at once, never a second holder', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const held = await tryLock(p, kernel);
    const h = await holder('lock', p, { backend: 'lease', timeout: 120_000 }, noAddon);
    expect(h.first).toBe('error ENOTSUP');
    await held.release();
  });

  test('a released kernel lock (file kept, holder still running): ENOTSUP at once, not a wait until the timeout', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    await (await tryLock(p, kernel)).release();
    const h = await holder('lock', p, { backend: 'lease', timeout: 120_000 }, noAddon);
    expect(h.first).toBe('error ENOTSUP');
    const t = await holder('tryLock', p, { backend: 'lease' }, noAddon);
    expect(t.first).toBe('error ENOTSUP');
  });
});

describe("'auto' follows mounts", () => {
  test('a FUSE mount appearing over the directory switches to leases, and back when it goes away', async (ctx) => {
    if (!haveTools('bindfs', 'fusermount3')) return ctx.skip();
    await using d = await tempDir();
    const src = join(d.path, 'src');
    const dir = join(d.path, 'store');
    mkdirSync(src);
    mkdirSync(dir);
    // removeOnRelease: FUSE refuses to mount over a directory that is not empty.
    const before = await tryLock(join(dir, 'a.lock'), { removeOnRelease: true });
    expect(before.backend).toBe('kernel');
    await before.release();
    const m = spawnSync('bindfs', [src, dir], { encoding: 'utf8' });
    expect(m.status, m.stderr).toBe(0);
    try {
      const during = await tryLock(join(dir, 'b.lock'), { removeOnRelease: true });
      expect(during.backend).toBe('lease');
      await during.release();
    } finally {
      expect(spawnSync('umount', [dir]).status).toBe(0);
    }
    const after = await tryLock(join(dir, 'c.lock'));
    expect(after.backend).toBe('kernel');
    await after.release();
  });
});

describe('xstage without the addon', () => {
  const xstage = fileURLToPath(new URL('../packages/staging/bin/xstage.js', import.meta.url));
  test.each([[['demo', '--workers', '1', '--artifacts', '1']], [['run', '/tmp/xlock-never-created.lock', '--', 'true']]])(
    'xstage %j exits 69 with the reason, no stack trace',
    (args) => {
      const r = spawnSync(process.execPath, [xstage, ...args], { env: { ...process.env, ...noAddon }, encoding: 'utf8' });
      expect(r.status, r.stderr).toBe(69);
      expect(r.stderr).toContain('XLOCK_ADDON=/nonexistent/xlock.node did not load');
      expect(r.stderr).not.toMatch(/\n\s+at /);
    },
  );
});
