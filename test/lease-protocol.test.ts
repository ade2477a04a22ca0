/**
 * The lease protocol's two ways to publish a lease file (an `O_TMPFILE` file
 * linked in one native call, with `AT_EMPTY_PATH` or, on kernels before
 * 6.10, through /proc/self/fd; or a temporary side file hard-linked to the
 * name: packages/core/src/internal/lease-publish.ts) and its release: one
 * protocol, so every test runs every way. The temporary-file way is what
 * filesystems without `O_TMPFILE` (NFS, FUSE) and processes without the
 * addon get; here it is forced with a test hook, and met for real on a
 * bindfs (FUSE) mount.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { isLockError, lock, readOwner, tryLock, type FileLock } from '@x/core';
import { hooks } from '@x/core/testing';
import { spawnSync } from 'node:child_process';
import { lstatSync, readdirSync, readFileSync, readlinkSync, renameSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { fixture, reapAll, start } from './helpers/child.js';
import { bindfs } from './helpers/mounts.js';
import { tempDir } from './helpers/tmp.js';
import { haveTools } from './helpers/tools.js';
import { takeoverBarrier, tick } from './helpers/core-util.js';

afterEach(async () => {
  hooks.leaseNoTmpfile = undefined;
  hooks.leaseLinkViaProc = undefined;
  hooks.beforeTakeover = undefined;
  await reapAll();
});

const ways = [
  ['O_TMPFILE, linked with AT_EMPTY_PATH', {}],
  ['O_TMPFILE, linked through /proc/self/fd (kernels before 6.10)', { leaseLinkViaProc: true }],
  ['a temporary file', { leaseNoTmpfile: true }],
] as const;

const noAddon = { XLOCK_ADDON: '/nonexistent/xlock.node' };

async function leaseHolder(path: string, options: object, env?: NodeJS.ProcessEnv) {
  const child = start(process.execPath, [fixture('lease-holder.mjs'), path, JSON.stringify(options)], env);
  expect(await child.line()).toBe('acquired');
  return child;
}

test('the lease record names this process in full, with a fresh token per lease', async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.lock');
  const tokens = new Set<string>();
  for (let i = 0; i < 3; i++) {
    const held = await tryLock(p, { backend: 'lease', staleAfter: 5000 });
    const owner = await readOwner(p);
    expect(owner).toMatchObject({
      version: 1,
      backend: 'lease',
      pid: process.pid,
      hostname: hostname(),
      leaseMs: 5000,
    });
    expect(owner?.bootId).toBe(readFileSync('/proc/sys/kernel/random/boot_id', 'utf8').trim());
    expect(owner?.pidNs).toBe(readlinkSync('/proc/self/ns/pid'));
    expect(owner?.startTicks).toBeGreaterThan(0);
    expect(Math.abs(owner!.startedAt! - Date.now())).toBeLessThan(60_000);
    expect(owner?.token).toMatch(/^[0-9a-f]{32}$/);
    tokens.add(owner!.token!);
    await held.release();
  }
  expect(tokens.size).toBe(3);
});

describe.each(ways)('published through %s', (_way, way) => {
  test('a reader in another process never sees the lease file empty or half-written', async () => {
    Object.assign(hooks, way);
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const reader = start(process.execPath, [fixture('lease-reader.mjs'), p]);
    expect(await reader.line()).toBe('ready');
    for (let i = 0; i < 600; i++) {
      const held = await tryLock(p, { backend: 'lease' });
      await held.release();
    }
    reader.proc.stdin!.end();
    const [word, seen, empty, partial] = (await reader.line()).split(' ');
    expect(await reader.finish()).toBe(0);
    expect(word).toBe('done');
    expect({ empty: Number(empty), partial: Number(partial) }).toEqual({ empty: 0, partial: 0 });
    expect(Number(seen)).toBeGreaterThan(0);
    expect(readdirSync(d.path)).toEqual([]);
  });

  test('N contenders breaking one stale lease at the same moment: exactly one wins, nothing is left behind', async () => {
    Object.assign(hooks, way);
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    const dead = await leaseHolder(p, {});
    dead.proc.kill('SIGKILL');
    await dead.reap();
    const n = 6;
    takeoverBarrier(n);
    const results = await Promise.allSettled(Array.from({ length: n }, () => tryLock(p, { backend: 'lease' })));
    const won = results.filter((r): r is PromiseFulfilledResult<FileLock> => r.status === 'fulfilled');
    expect(won).toHaveLength(1);
    expect(readdirSync(d.path)).toEqual(['a.lock']);
    await won[0]!.value.release();
    expect(readdirSync(d.path)).toEqual([]);
  });
});

describe.each([
  ['with the addon (one native call)', undefined],
  ['without the addon (step by step)', noAddon],
] as const)('a late release %s', (_how, env) => {
  test("an old holder paused past its lease and then releasing never deletes its successor's lease", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'a.lock');
    // No heartbeat runs in the holder before its release (its lease is an
    // hour; we judge by our own 300 ms): only the release's own check
    // protects us.
    const old = await leaseHolder(p, { staleAfter: 3_600_000 }, env);
    old.proc.kill('SIGSTOP');
    let held: FileLock;
    try {
      held = await lock(p, { backend: 'lease', staleAfter: 300, pollInterval: 20, timeout: 20_000 });
    } finally {
      // Its release is the first thing it does when it runs again.
      old.proc.stdin!.end();
      old.proc.kill('SIGCONT');
    }
    const ino = lstatSync(p).ino;
    expect([await old.line(), await old.line()].sort()).toEqual(['aborted ERELEASED held=false', 'release-error ECOMPROMISED']);
    expect(await old.finish()).toBe(0);
    expect(lstatSync(p).ino).toBe(ino);
    expect((await readOwner(p))?.pid).toBe(process.pid);
    expect(held.held).toBe(true);
    await held.release();
    expect(readdirSync(d.path)).toEqual([]);
  });
});

/**
 * A lease holder (another process) whose native release pauses between its
 * check that the file is its own and the rename that moves it aside
 * (setLeaseReleaseTestGap): `release` on stdin makes it print `releasing`,
 * release, then print `released` or `release-error <code>`.
 */
const pausingReleaser = `
import { tryLock } from '@x/core';
import { setLeaseReleaseTestGap } from '@x/core/testing';
const [path, gap] = process.argv.slice(1);
const held = await tryLock(path, { backend: 'lease', staleAfter: 3_600_000 });
process.stdout.write('acquired\\n');
process.stdin.once('data', async () => {
  setLeaseReleaseTestGap(Number(gap));
  process.stdout.write('releasing\\n');
  try {
    await held.release();
    process.stdout.write('released\\n');
  } catch (err) {
    process.stdout.write(\`release-error \${err.code}\\n\`);
  }
  process.exit(0);
});
`;

/** Resolves once the main thread of process `pid` sleeps in nanosleep (the test pause); rejects after 20 s. */
async function sleeping(pid: number): Promise<void> {
  for (let i = 0; i < 4000; i++) {
    if (readFileSync(`/proc/${pid}/wchan`, 'utf8').includes('nanosleep')) return;
    await tick(5);
  }
  throw new Error(`process ${pid} never reached its test pause`);
}

test("a native release whose lease file is swapped between its check and its rename puts the successor's file back and leaves nothing", async () => {
  await using d = await tempDir();
  const p = join(d.path, 'a.lock');
  const old = start(process.execPath, ['--input-type=module', '-e', pausingReleaser, p, String(2_000_000_000)]);
  expect(await old.line()).toBe('acquired');
  old.proc.stdin!.write('release\n');
  expect(await old.line()).toBe('releasing');
  await sleeping(old.proc.pid!); // checked: the file is its own; the rename comes after the pause
  // A successor's file takes the name meanwhile (a takeover's last step: a rename over it).
  const successor = '{"v":1,"backend":"lease","pid":1,"token":"successor"}\n';
  writeFileSync(join(d.path, 'successor.tmp'), successor);
  const ino = lstatSync(join(d.path, 'successor.tmp')).ino;
  renameSync(join(d.path, 'successor.tmp'), p);
  expect(await old.line()).toBe('release-error ECOMPROMISED');
  expect(await old.finish()).toBe(0);
  expect(lstatSync(p).ino).toBe(ino);
  expect(readFileSync(p, 'utf8')).toBe(successor);
  expect(readdirSync(d.path)).toEqual(['a.lock']);
});

/**
 * The names in a FUSE mount's directory but libfuse's own: a file unlinked
 * while the kernel has not yet told the filesystem it was closed becomes
 * `.fuse_hidden<n>` until then (bindfs, like most FUSE filesystems).
 */
const listing = (dir: string): string[] => readdirSync(dir).filter((n) => !n.startsWith('.fuse_hidden'));

/** Whether O_TMPFILE works in `dir` (python's os.open, the plain system call). */
function tmpfileWorks(dir: string): boolean {
  const r = spawnSync('python3', ['-c', 'import os,sys; os.close(os.open(sys.argv[1], os.O_TMPFILE | os.O_WRONLY, 0o600))', dir]);
  return r.status === 0;
}

describe.runIf(haveTools('bindfs', 'fusermount3', 'python3'))('a FUSE filesystem without O_TMPFILE (bindfs)', () => {
  test('leases are published through a temporary file: taken, refused, taken over, released, nothing left', async () => {
    await using d = await tempDir();
    await using m = bindfs(d.path);
    expect(tmpfileWorks(m.path)).toBe(false);
    expect(tmpfileWorks(d.path)).toBe(true);
    const p = join(m.path, 'a.lock');
    const held = await tryLock(p, { backend: 'lease' });
    expect(await readOwner(p)).toMatchObject({ backend: 'lease', pid: process.pid });
    const err = await tryLock(p, { backend: 'lease' }).catch((e: unknown) => e);
    expect(isLockError(err, 'ELOCKED')).toBe(true);
    await held.release();
    expect(listing(m.path)).toEqual([]);
    // A dead holder's lease (another process, same mount) is taken over at once.
    const dead = await leaseHolder(p, {});
    dead.proc.kill('SIGKILL');
    await dead.reap();
    const taken = await tryLock(p, { backend: 'lease' });
    expect((await readOwner(p))?.pid).toBe(process.pid);
    expect(listing(m.path)).toEqual(['a.lock']);
    await taken.release();
    expect(listing(m.path)).toEqual([]);
  });
});
