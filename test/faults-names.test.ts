/**
 * Hostile names (issue 12, items 1 and 2): paths at the kernel's limits.
 * PATH_MAX is 4096 bytes with the NUL (so 4095 is the longest path), NAME_MAX
 * is 255 bytes per component. Too long is an OS error, `ENAMETOOLONG` with the
 * path, from every backend; a lease on any legal name can be released, taken
 * over, and its crash leftovers reclaimed.
 */
import { afterEach, describe, expect, test } from 'vitest';
import { readOwner, tryLock } from '@x/core';
import { once } from 'node:events';
import { createHash } from 'node:crypto';
import { mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fixture, reapAll, start } from './helpers/child.js';
import { osErrorOf } from './helpers/core-util.js';
import { tempDir } from './helpers/tmp.js';

afterEach(reapAll);

const PATH_MAX = 4095; // bytes, without the NUL

/** A path of exactly `total` bytes under `base` whose last component is `leaf` long; creates its parents. */
function longPath(base: string, total: number, leaf: number): string {
  let dir = base;
  // Components of at most 200 bytes until only the leaf (and its '/') is left.
  while (dir.length + 1 + leaf < total) {
    const room = total - leaf - 1 - dir.length - 1;
    dir = join(dir, 'd'.repeat(Math.min(200, Math.max(1, room))));
  }
  const path = join(dir, 'L'.repeat(total - dir.length - 1));
  expect(Buffer.byteLength(path)).toBe(total);
  mkdirSync(dir, { recursive: true });
  return path;
}

describe('path length limits', () => {
  test.each(['kernel', 'lease'] as const)('%s: a 4095-byte path (the longest legal one) locks and releases', async (backend) => {
    await using d = await tempDir();
    const p = longPath(d.path, PATH_MAX, 20);
    const held = await tryLock(p, { backend });
    expect((await readOwner(p))?.pid).toBe(process.pid);
    await held.release();
  });

  test.each(['kernel', 'lease'] as const)('%s: a 4096-byte path rejects ENAMETOOLONG with its path', async (backend) => {
    await using d = await tempDir();
    const p = longPath(d.path, PATH_MAX, 20) + 'x';
    const err = await osErrorOf(tryLock(p, { backend }));
    expect(err).not.toBeInstanceOf(TypeError);
    expect(err.code).toBe('ENAMETOOLONG');
    expect(err.path).toBe(p);
  });

  test.each(['kernel', 'lease'] as const)(
    '%s: a far too long path (8 KiB) rejects ENAMETOOLONG with its path',
    async (backend) => {
      await using d = await tempDir();
      const p = join(d.path, 'a/'.repeat(4096) + 'x.lock');
      const err = await osErrorOf(tryLock(p, { backend, parents: true }));
      expect(err.code).toBe('ENAMETOOLONG');
      expect(err.path).toBe(p);
      expect(readdirSync(d.path)).toEqual([]);
    },
  );

  test.each(['kernel', 'lease'] as const)('%s: a 256-byte name rejects ENAMETOOLONG with its path', async (backend) => {
    await using d = await tempDir();
    const p = join(d.path, 'n'.repeat(256));
    const err = await osErrorOf(tryLock(p, { backend }));
    expect(err.code).toBe('ENAMETOOLONG');
    expect(err.path).toBe(p);
  });

  test('a multi-byte character straddling the limit is too long, never cut', async () => {
    await using d = await tempDir();
    // 4093 bytes, then a 3-byte character: 4096 bytes, one more than the limit.
    const p = longPath(d.path, PATH_MAX - 2, 20) + '€';
    expect(Buffer.byteLength(p)).toBe(PATH_MAX + 1);
    const err = await osErrorOf(tryLock(p, { backend: 'kernel' }));
    expect(err.code).toBe('ENAMETOOLONG');
    expect(readdirSync(join(p, '..'))).toEqual([]);
  });

  test('a NUL byte stays a TypeError', async () => {
    await using d = await tempDir();
    await expect(tryLock(join(d.path, 'a\0b'), { backend: 'kernel' })).rejects.toBeInstanceOf(TypeError);
  });
});

/** A lease at `path` whose holder was SIGKILLed (provably dead on this host). */
async function staleLease(path: string): Promise<void> {
  const child = start(process.execPath, [fixture('lease-holder.mjs'), path, '{}']);
  expect(await child.line()).toBe('acquired');
  child.proc.kill('SIGKILL');
  await child.reap();
}

/** Runs lease-crash.mjs, which SIGKILLs itself mid-`step`; resolves once it is dead. */
async function crashMidStep(path: string, step: 'release' | 'claimed' | 'broken'): Promise<void> {
  const child = start(process.execPath, [fixture('lease-crash.mjs'), path, step]);
  const exited = once(child.proc, 'exit');
  if (step === 'release') expect(await child.line()).toBe('acquired');
  const [code, signal] = (await exited) as [number | null, string | null];
  expect({ code, signal }).toEqual({ code: null, signal: 'SIGKILL' });
}

describe('lease side files fit whenever the lock file fits', () => {
  const names = [
    ['a 255-byte name (NAME_MAX)', (d: string) => join(d, 'n'.repeat(255))],
    ['a 4095-byte path (PATH_MAX) with a short name', (d: string) => longPath(d, PATH_MAX, 1)],
    ['a 4095-byte path with a 255-byte name', (d: string) => longPath(d, PATH_MAX, 255)],
  ] as const;

  test.each(names)('%s: release leaves nothing behind', async (_what, at) => {
    await using d = await tempDir();
    const p = at(d.path);
    const held = await tryLock(p, { backend: 'lease' });
    await held.release();
    expect(readdirSync(dirname(p))).toEqual([]);
  });

  test.each(names)("%s: a dead holder's lease is taken over", async (_what, at) => {
    await using d = await tempDir();
    const p = at(d.path);
    await staleLease(p);
    const held = await tryLock(p, { backend: 'lease' });
    expect((await readOwner(p))?.pid).toBe(process.pid);
    expect(readdirSync(dirname(p))).toEqual([basename(p)]);
    await held.release();
    expect(readdirSync(dirname(p))).toEqual([]);
  });

  test.each(names)('%s: a crash mid-release leaves a side file the next taker reclaims', async (_what, at) => {
    await using d = await tempDir();
    const p = at(d.path);
    await crashMidStep(p, 'release');
    const left = readdirSync(dirname(p));
    expect(left).toHaveLength(1);
    expect(left[0]).toMatch(/^\.[0-9a-f]{16}\.released\.[0-9a-f]{16}$/);
    const held = await tryLock(p, { backend: 'lease' });
    expect(readdirSync(dirname(p))).toEqual([basename(p)]);
    await held.release();
    expect(readdirSync(dirname(p))).toEqual([]);
  });

  test.each(names)('%s: a crash mid-takeover leaves side files the next taker reclaims', async (_what, at) => {
    await using d = await tempDir();
    const p = at(d.path);
    await staleLease(p);
    await crashMidStep(p, 'broken');
    const left = readdirSync(dirname(p)).sort();
    expect(left).toHaveLength(2);
    expect(left.map((n) => n.split('.')[2])).toEqual(['broken', 'claim']);
    const held = await tryLock(p, { backend: 'lease' });
    expect(readdirSync(dirname(p))).toEqual([basename(p)]);
    await held.release();
    expect(readdirSync(dirname(p))).toEqual([]);
  });

  test.each(names)(
    '%s: a crash right after winning the claim does not wedge: tryLock takes the lease at once',
    async (_what, at) => {
      await using d = await tempDir();
      const p = at(d.path);
      await staleLease(p);
      await crashMidStep(p, 'claimed');
      const left = readdirSync(dirname(p)).filter((n) => n !== basename(p));
      expect(left).toHaveLength(1);
      expect(left[0]).toMatch(/^\.[0-9a-f]{16}\.claim\.[0-9a-f]{16}$/);
      const held = await tryLock(p, { backend: 'lease' });
      expect((await readOwner(p))?.pid).toBe(process.pid);
      expect(readdirSync(dirname(p))).toEqual([basename(p)]);
      await held.release();
      expect(readdirSync(dirname(p))).toEqual([]);
    },
  );

  test('an empty temporary file of a create killed before its write is reclaimed', async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const h = createHash('sha256').update('x.lock').digest('hex').slice(0, 16);
    writeFileSync(join(d.path, `.${h}.create.0123456789abcdef`), '');
    const held = await tryLock(p, { backend: 'lease' });
    expect(readdirSync(d.path)).toEqual(['x.lock']);
    await held.release();
  });

  test("a stranger's file that shares the prefix but holds no lease record is left alone", async () => {
    await using d = await tempDir();
    const p = join(d.path, 'x.lock');
    const h = createHash('sha256').update('x.lock').digest('hex').slice(0, 16);
    const stranger = `.${h}.released.notalease`;
    writeFileSync(join(d.path, stranger), 'not a lease record\n');
    const held = await tryLock(p, { backend: 'lease' });
    await held.release();
    expect(readdirSync(d.path)).toEqual([stranger]);
  });
});
